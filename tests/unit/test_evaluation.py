"""The eval command's statistics and its command line."""

from __future__ import annotations

import itertools

import numpy as np

from cluster.cli import main
from models.evaluation import fit_logistic, roc_auc


def test_roc_auc_is_the_share_of_positive_negative_pairs_ranked_right():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=60), 1)  # rounding makes ties, which count one half
    positive = rng.random(60) < 0.4
    pairs = [(p, n) for p, n in itertools.product(scores[positive], scores[~positive])]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert abs(roc_auc(scores, positive) - expected) < 1e-12


def test_logistic_fit_recovers_a_known_calibration():
    rng = np.random.default_rng(4)
    cosines = rng.uniform(0.7, 1.0, 20000)  # symmetric about 0.85: balancing moves nothing
    same = rng.random(20000) < 1 / (1 + np.exp(-40 * (cosines - 0.85)))
    slope, midpoint = fit_logistic(cosines, same)
    assert abs(midpoint - 0.85) < 0.01
    assert 30 < slope < 50


def test_eval_command_reports_on_a_labelled_folder(model_config, faces_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    chosen = ["faceapi_amy1.png", "faceapi_amy2.png", "faceapi_raj1.png", "faceapi_raj2.png", "faceapi_bbt1.jpg"]
    lines = ["file,identity,source_repo,source_path,faces_in_image"]
    for name in chosen:
        (folder / name).symlink_to(faces_dir / name)
        identity = "multi" if "bbt" in name else name[len("faceapi_") : -5]
        lines.append(f"{name},{identity},,,{4 if identity == 'multi' else 1}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    assert main(["eval", str(folder), "--json", str(tmp_path / "report.json")]) == 0
    out = capsys.readouterr().out
    assert "face-count accuracy         1.0000 (5/5)" in out
    assert "pairs (same / different)    2 / 4" in out
    assert (tmp_path / "report.json").is_file()
