"""Code that exists for speed alone: each piece has a plain equivalent that gives the
same results (up to rounding, or the same law for random draws). What each buys,
where it was measured and when it can go: `README.md` beside this file."""
