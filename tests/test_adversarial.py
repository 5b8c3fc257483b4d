"""Adversarial fine-tuning of the autoencoder's synthesis: only g_s changes, the bitstream stays.

A tiny autoencoder (N=M=16, two qualities) stands in for the shipped one, so the test
needs no ../shared and takes seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage import data

from compressors import get_codec, models
from compressors.autoencoder import container
from compressors.autoencoder.adversarial import PatchCritic, fit, synthesis_input
from compressors.autoencoder.model import MeanScaleHyperprior


@pytest.fixture(scope="module")
def base_and_tuned():
    torch.manual_seed(0)
    base = MeanScaleHyperprior(16, 16, 2)
    base_id, blob, meta = models.serialize(base, {"lambdas": [0.01, 0.05]})
    models.load_model(blob, meta, kind="autoencoder")
    images = [data.astronaut()[:160, :160], data.coffee()[:160, :160]]
    logs: list[str] = []
    tuned, tuned_meta = fit(images, options={"batch": 2, "crop": 64, "warmup": 1, "lr": 1e-3, "precision": "fp32"},
                            max_steps=4, seed=0, init=(blob, meta), log=logs.append)
    tuned_id, tblob, tmeta = models.serialize(tuned, tuned_meta)
    models.load_model(tblob, tmeta, kind="autoencoder")
    return base_id, json.loads(meta), tuned_id, json.loads(tmeta), base, tuned, logs


def test_only_the_synthesis_transform_changes(base_and_tuned):
    _, _, _, _, base, tuned, _ = base_and_tuned
    b, t = base.state_dict(), tuned.state_dict()
    changed = {k for k in b if not torch.equal(b[k], t[k])}
    assert changed and all(k.startswith("g_s.") for k in changed)


def test_the_tuned_model_is_another_autoencoder_model_with_its_lineage(base_and_tuned):
    base_id, base_meta, tuned_id, meta, *_ , logs = base_and_tuned
    assert tuned_id != base_id and meta["kind"] == "autoencoder" and meta["arch"] == base_meta["arch"]
    assert meta["lambdas"] == [0.01, 0.05] and meta["training"]["finetuned_from"] == base_id
    last = meta["training"]["lineage"][-1]
    assert last["model_id"] == tuned_id and last["adversarial"]["adv_weight"] == 0.1
    assert meta["training"]["steps"] == 4


def test_the_bitstream_is_the_base_models_and_decodes_with_the_tuned_synthesis(base_and_tuned):
    base_id, _, tuned_id, _, base, tuned, _ = base_and_tuned
    codec = get_codec("autoencoder")
    image = data.chelsea()[:64, :96]
    a, b = codec.encode(image, quality=2, model=base_id), codec.encode(image, quality=2, model=tuned_id)
    payload = slice(container.HEADER_SIZE, -container.TRAILER_SIZE)
    assert a[payload] == b[payload] and len(a) == len(b)  # same code, same bytes: same bpp
    assert codec.decode(b).shape == image.shape
    q = torch.ones(1, dtype=torch.long)
    x = torch.from_numpy(image[:, :64].astype(np.float32) / 255).permute(2, 0, 1)[None]  # a multiple of 64
    v = synthesis_input(base, x, q)
    assert not torch.allclose(base.g_s(v), tuned.g_s(v))  # another synthesis of the same code


def test_the_synthesis_input_is_the_hard_quantised_code():
    """Not the training-time noise: g_s learns on exactly round(y - mu) + mu, what the decoder gets."""
    torch.manual_seed(1)
    model = MeanScaleHyperprior(8, 8, 1).eval()
    q = torch.zeros(1, dtype=torch.long)
    gain, inv_gain = model.gains(q)
    x = torch.rand(1, 3, 64, 64)
    v = synthesis_input(model, x, q)
    _, means = model.hyper_params(torch.round(model.h_a(model.g_a(x) * gain)))
    residual = v / inv_gain - means
    assert torch.allclose(residual, torch.round(residual), atol=1e-4)


def test_the_critic_scores_patches():
    assert PatchCritic(8)(torch.rand(2, 3, 64, 64)).shape == (2, 1, 8, 8)


def test_the_autoencoder_trainer_dispatches_adversarial_fine_tuning(base_and_tuned):
    """`imgpress train --kind autoencoder --adversarial` reaches this fit through the one trainer table."""
    base_id = base_and_tuned[0]
    base = models.get(base_id, "autoencoder").module
    _, blob, meta = models.serialize(base, {"lambdas": [0.01, 0.05]})
    crops = [data.astronaut()[:128, :128], data.coffee()[:128, :128]]
    mid, _, tmeta = models.train("autoencoder", crops, options={"adversarial": "true", "adv_weight": 0.2,
                                                                "precision": "fp32"},
                                 minutes=0, max_steps=2, init=(blob, meta), log=lambda s: None)
    tmeta = json.loads(tmeta)
    assert tmeta["training"]["adversarial"] is True and tmeta["training"]["finetuned_from"] == base_id
    assert tmeta["training"]["options"]["adv_weight"] == 0.2 and tmeta["training"]["options"]["lr"] == 2e-5
