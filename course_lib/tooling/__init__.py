"""Tooling for running, checking, generating and grading the course notebooks.

    notebook_io   read/write notebooks atomically, find the course's notebooks
    execute       run notebooks with papermill and write the summary report
    exercises     generate exercises/ from solutions/ and check they are in sync
    grading       grade submitted exercise notebooks: the learner's cells in their own kernel
    grade_harness the test server: each graded cell in a fresh process, the learner's
                  variables loaded under guard (tampering cannot turn a failure into points)
    sweep         the CRM reproduction grid, resumable
    cli           the ``course`` command
"""
