"""fastText training in a fresh process: the only way it is reproducible.

Measured with fasttext-numpy2-wheel 0.9.2, thread=1 and a fixed seed: a fresh process trains the same
model every time (5 of 5), but later trainings in the same process drift (3 of 5 identical). This module
imports nothing but fasttext, so the spawned child starts fast.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def _fit(data: str, model_path: str, kwargs: dict) -> None:
    import fasttext

    fasttext.train_supervised(input=data, thread=1, verbose=0, **kwargs).save_model(model_path)


def fit_in_fresh_process(data: str, model_path: str, **kwargs) -> None:
    """Train `fasttext.train_supervised(input=data, thread=1, **kwargs)` in a spawned child; save to model_path."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_fit, data, model_path, kwargs).result()
