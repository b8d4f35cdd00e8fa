"""course_lib: the library behind the reward-modeling course.

Each module has one job and imports only from modules below it:

    results                   notebooks record their key numbers and figures
    bradley_terry             Chapter 01: BT fitting, Elo, arenas, bootstrap
    tooling/                  running, checking, exercise generation, grading

Functions name the chapter that introduces them ("Defined in Chapter NN"), so a
reader can always go from code to explanation.
"""

__version__ = "0.1.0"
