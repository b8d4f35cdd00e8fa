"""Progress bars for long loops: ``tqdm.auto`` without its ipywidgets warning.

``tqdm.auto`` picks a widget bar in Jupyter when ipywidgets is installed and a
text bar otherwise; in the latter case it warns on import, and that warning
would carry a local file path into every stored notebook output. The course
does not need widgets, so the warning is silenced here, once.
"""

import warnings

from tqdm import TqdmExperimentalWarning, TqdmWarning

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=TqdmWarning)
    warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
