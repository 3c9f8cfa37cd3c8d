"""Identification's sizes, in one place for every entry point (``raypipe identify``, ``raypipe label``,
``predict_dataset``, the labelling stage and :mod:`raypipe.identify.search`); no imports, so that the
command line and the job settings read them without loading the search.

Examples:
    >>> SHORTLIST < SCREEN
    True
"""

SHORTLIST = 20  # library molecules stage 1 keeps for the simulation match
# stage 1's list screened by the depiction match alone before the simulation match: the filter's best
# SCREEN, cut to the SHORTLIST whose depictions match best (raypipe.identify.search.screen). On validation
# readings (bench/bench_screen.py) the filter ranks the truth 101-500 for 73 of 797: screens of 300 / 400 / 500
# shortlist 44 / 53 / 58 of them (500 against 300: 15 gained, 1 pushed out; none at ranks 6-100 lost)
# (docs/identification.md)
SCREEN = 500
SCREEN_RESERVE = 5  # the filter's best kept whatever their depictions (a depiction can be wrong where it is sure)
TOP = 5  # matches kept per scan
