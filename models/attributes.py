"""Age, gender and emotions from 112x112 aligned chips, and their two wire formats.

The networks are face-api.js's age/gender (TinyXception) and expression models. FindFace names the
"fearful" class "scared"; that renaming happens here, once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from .align import template_for
from .extractor import to_nchw
from .nets.expression import EXPRESSION_LABELS
from .runtime import Runner

INPUT_SIZE = 112
EMOTION_NAMES = tuple("scared" if label == "fearful" else label for label in EXPRESSION_LABELS)
ATTRIBUTE_NAMES = ("gender", "age", "emotions")
MODEL_NAMES = {"age": "faceapi_age.v1", "gender": "faceapi_gender.v1", "emotions": "faceapi_emotions.v1"}


@dataclass(frozen=True)
class FaceAttributes:
    age: float
    male_probability: float
    emotions: tuple[tuple[str, float], ...]  # every emotion, highest score first

    @property
    def gender(self) -> str:
        return "MALE" if self.male_probability >= 0.5 else "FEMALE"

    @property
    def gender_score(self) -> float:
        return self.male_probability if self.gender == "MALE" else 1.0 - self.male_probability

    def features(self, names: Collection[str]) -> dict[str, Any]:
        """Old-style ``features`` object, with the asked attributes only."""
        out: dict[str, Any] = {}
        if "gender" in names:
            out["gender"] = {"gender": self.gender, "score": round(self.gender_score, 4)}
        if "age" in names:
            out["age"] = int(round(self.age))
        if "emotions" in names:
            out["emotions"] = [{"emotion": name, "score": round(score, 4)} for name, score in self.emotions]
        return out

    def attributes(self, names: Collection[str]) -> dict[str, Any]:
        """New-style ``attributes`` object: one ``{"attribute", "model", "result"}`` per asked name."""
        results = {
            "age": int(round(self.age)),
            "gender": [
                {"name": name, "confidence": round(score, 4)}
                for name, score in sorted(
                    (("male", self.male_probability), ("female", 1.0 - self.male_probability)),
                    key=lambda item: -item[1],
                )
            ],
            "emotions": [{"name": name, "confidence": round(score, 4)} for name, score in self.emotions],
        }
        return {
            name: {"attribute": name, "model": MODEL_NAMES[name], "result": results[name]}
            for name in ATTRIBUTE_NAMES
            if name in names
        }


class AttributeModel:
    input_size = INPUT_SIZE
    template = template_for(INPUT_SIZE)

    def __init__(self, age_gender: Runner, expression: Runner):
        self.age_gender, self.expression = age_gender, expression

    def predict(self, chips: np.ndarray) -> list[FaceAttributes]:
        if len(chips) == 0:
            return []
        batch = to_nchw(chips)
        ages, genders = self.age_gender(batch)
        (expressions,) = self.expression(batch)
        results = []
        for age, gender, probabilities in zip(ages, genders, expressions):
            order = np.argsort(-probabilities)
            emotions = tuple((EMOTION_NAMES[i], float(probabilities[i])) for i in order)
            results.append(FaceAttributes(float(age), float(gender[0]), emotions))
        return results
