"""The transformers moderation backend on a tiny BERT classifier built here and saved.

No toxicity model can be downloaded in tests, so this builds one with Detoxify's
label names (as unitary/toxic-bert has them), sets its output layer so the scores
are known, saves it, and loads it through the config a user would write.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLI = [sys.executable, "-m", "speech2image.cli"]
TOXIC_BERT_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
ConfigFile = Callable[[str], Path]


def tiny_classifier(folder: Path, biases: list[float]) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "draw", "me", "a", "red", "fox"]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=len(TOXIC_BERT_LABELS),
        id2label=dict(enumerate(TOXIC_BERT_LABELS)),
        label2id={label: i for i, label in enumerate(TOXIC_BERT_LABELS)},
        problem_type="multi_label_classification",
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(biases))
    model.save_pretrained(folder)
    return folder


def check(config: Path, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "check-prompt", "--json", "--config", str(config), text],
        capture_output=True,
        text=True,
        check=False,
    )


def test_threat_score_from_a_local_model_rejects(tmp_path: Path, config_file: ConfigFile) -> None:
    model = tiny_classifier(tmp_path / "toxic-bert", [-6, -6, -6, 6, -6, -6])
    config = config_file(
        f'[moderation]\nbackends = ["transformers"]\ntransformers_model = "{model}"\n'
    )
    result = check(config, "draw me a red fox")
    assert result.returncode == 1, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["flagged"] == ["threat"]
    assert verdict["backend"] == "transformers"
    # toxic-bert's names are mapped to Detoxify's: toxic -> toxicity, identity_hate -> ...
    assert set(verdict["scores"]) == {
        "toxicity",
        "severe_toxicity",
        "obscene",
        "threat",
        "insult",
        "identity_attack",
    }
    assert verdict["scores"]["threat"] == pytest.approx(0.9975, abs=1e-3)
    assert verdict["scores"]["toxicity"] == pytest.approx(0.0025, abs=1e-3)


def test_low_scores_from_a_local_model_allow(tmp_path: Path, config_file: ConfigFile) -> None:
    model = tiny_classifier(tmp_path / "calm-bert", [-6] * 6)
    config = config_file(
        f'[moderation]\nbackends = ["transformers"]\ntransformers_model = "{model}"\n'
    )
    result = check(config, "a red fox")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["allowed"] is True


def test_wrong_model_path_names_the_key(tmp_path: Path, config_file: ConfigFile) -> None:
    missing = tmp_path / "nowhere"
    config = config_file(
        f'[moderation]\nbackends = ["transformers"]\ntransformers_model = "{missing}"\n'
    )
    result = check(config, "a red fox")
    assert result.returncode == 78
    assert f"moderation model folder {missing} ([moderation] transformers_model in" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
