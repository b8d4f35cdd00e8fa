"""Tooling for running, checking and generating the course notebooks (grading is ``course_lib.grading``).

    notebook_io   read/write notebooks atomically, find the course's notebooks
    execute       run notebooks with papermill and write the summary report
    exercises     generate exercises/ from solutions/ and check they are in sync
    results       what a notebook records (key numbers, figures) and reads back
    checks        `course check`: stray state, exercises in step with solutions
    site          the static course website
    cli           the ``course`` command
"""
