"""`uscl serve`: a local web app and HTTP API around one fine-tuned model (FastAPI on uvicorn).

>>> from uscl.serve import create_app
>>> app = create_app("runs/ft_pocus", fold=0)   # then: uvicorn.run(app, host="127.0.0.1", port=8765)

The page (``/``) uploads a clip, DICOM or image and shows what `uscl predict --explain`
makes of it; ``POST /api/predict`` (multipart field ``file``) returns the JSON `uscl
predict` writes. One model is loaded once; one worker thread runs the uploads in turn.
"""

from uscl.serve.app import create_app, load_predictor
from uscl.serve.predictor import PredictOptions, Predictor

__all__ = ["PredictOptions", "Predictor", "create_app", "load_predictor"]
