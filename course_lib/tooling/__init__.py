"""Tooling for running, checking, generating and grading the course notebooks.

    notebook_io   read/write notebooks atomically, find the course's notebooks
    execute       run notebooks with papermill and write the summary report
    exercises     generate exercises/ from solutions/ and check they are in sync
    grading       grade submitted exercise notebooks in a fresh kernel
    cli           the ``course`` command
"""
