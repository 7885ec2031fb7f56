"""deepseek_ray: AutoML on Ray — search (Ray Tune), train (Ray Train), export (ONNX), serve (Ray Serve).

Stages are sub-packages, imported on use so that ``import deepseek_ray`` stays cheap:

>>> import deepseek_ray
>>> deepseek_ray.__version__
'0.1.0'
"""

__version__ = "0.1.0"
