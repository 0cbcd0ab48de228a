"""Bundled ONNX models for the model engine, loaded by name through importlib.resources.

- ``iforest-v1.onnx`` (``iforest-1.1.0``, the default): 25 trees, 256 samples per tree,
  contamination 0.002. (``iforest-1.0.0`` had 100 trees: four times the scoring cost, the
  model engine's largest, for no difference on the dev split — 73.4 against 73.1 with the
  forest voting at likelihood 1e-8, and no vote at the default 1e-20 either way.)
- ``iforest-v2.onnx`` (``iforest-2.0.0``, canary variant): 150 trees, 128 samples per tree,
  contamination 0.005 (more sensitive).

Both are produced by ``specialists/model/train.py`` (the commands are in its docstring): each
file holds the whole forest as one ``ai.onnx.ml.TreeEnsembleRegressor`` node summing path
lengths, plus five element-wise nodes giving sklearn's ``decision_function`` (checked against
sklearn to 1e-5 when exported).
"""
