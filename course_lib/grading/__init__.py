"""Grading submitted exercise notebooks (``course grade``); no notebook imports this package.

    grader    grade a batch: the learner's cells in their own kernel, then every graded
              cell in a fresh test process; the scores
    report    the grades as records, ``grades.json`` / ``grades.csv`` and a table
    sources   what the grader reads from notebooks: the solution's trusted setup and
              imports, the learner's definitions to replay
    snapshot  the learner's variables written as data (JSON, ``np.save``, ``torch.save``)
              and read back with loaders that run no code from the file
    harness   the test server: forks a fresh process per graded cell, builds the
              learner's namespace, runs the solution's test cell, reports pass or fail
    guard     what the test process puts back after the learner's definitions ran

The README's "What the grader defends, and what it does not" states the threat model.
"""
