"""Identification's sizes, in one place for every entry point (``raypipe identify``, ``raypipe label``,
``predict_dataset``, the labelling stage and :mod:`raypipe.identify.search`); no imports, so that the
command line and the job settings read them without loading the search.

Examples:
    >>> SHORTLIST < SCREEN
    True
"""

SHORTLIST = 20  # library molecules stage 1 keeps for the simulation match
# stage 1's list screened by the depiction match alone before the simulation match: the filter's best
# SCREEN, cut to the SHORTLIST whose depictions match best (raypipe.identify.search.screen); on validation
# stacks whose truth the filter put at ranks 101-300, a screen of 300 shortlisted 44 of 51, and pushed out
# none of 20 at ranks 6-100 (bench/bench_screen.py, docs/identification.md)
SCREEN = 300
SCREEN_RESERVE = 5  # the filter's best kept whatever their depictions (a depiction can be wrong where it is sure)
TOP = 5  # matches kept per scan
