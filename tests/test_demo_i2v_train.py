"""The demo model's image-to-video training: VAE phase 4 (first frames from exact latents) and the DiT round with the
official image-to-video masking (first latent frame clean, timestep 0 on its tokens, no loss there)."""
import json
from pathlib import Path

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.demo.export import MODEL_FILES, save_dit, save_text_encoder, save_vae
from wan_core.demo.train import file_training, run
from wan_core.demo.training.config import TrainConfig, dit_round
from wan_core.demo.training.dit_round import flow_loss
from wan_core.demo.training.text import build_text_encoder, train_demo_tokenizer
from wan_core.demo.training.vae_stage import first_frame_batch, first_frame_loss, train_vae
from wan_core.model import WanTransformer
from wan_core.vae import WanVAE

CFG = TrainConfig.smoke()
single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


class Recorder(torch.nn.Module):
    """A DiT stand-in that records its inputs and returns a fixed velocity."""

    def __init__(self, dit, out):
        super().__init__()
        self.cfg, self.out, self.seen = dit.cfg, out, []
        self.text_embedding, self.blocks = dit.text_embedding, dit.blocks  # what compact_text patches

    def forward(self, x, t, context):
        self.seen.append((x.clone(), t.clone()))
        return self.out


def test_i2v_rows_get_a_clean_first_frame_timestep_zero_and_no_loss_there():
    torch.manual_seed(0)
    dit = WanTransformer(CFG.dit)
    x0 = torch.randn(3, 48, 3, 4, 4)
    context = torch.randn(3, 5, CFG.dit.text_dim)
    rows = torch.tensor([True, False, True])
    out = torch.randn_like(x0)
    rec = Recorder(dit, out)
    loss = flow_loss(rec, x0, context, CFG, torch.Generator().manual_seed(1), shift=5.0, image_rows=rows)
    x, t = rec.seen[0]
    tokens_per_frame = (4 // 2) * (4 // 2)
    assert t.shape == (3, 3 * tokens_per_frame)
    assert torch.equal(x[rows, :, 0], x0[rows, :, 0])  # clean first frame on image rows
    assert not torch.equal(x[~rows, :, 0], x0[~rows, :, 0])
    assert (t[rows, :tokens_per_frame] == 0).all() and (t[rows, tokens_per_frame:] > 0).all()
    assert (t[1] == t[1, 0]).all() and t[1, 0] > 0  # a text-to-video row: one timestep for all its tokens
    # no loss on the image rows' first frame: changing the prediction there leaves the loss unchanged
    out2 = out.clone()
    out2[0, :, 0] += 10.0
    rec2 = Recorder(dit, out2)
    loss2 = flow_loss(rec2, x0, context, CFG, torch.Generator().manual_seed(1), shift=5.0, image_rows=rows)
    assert torch.allclose(loss, loss2)
    out2[1, :, 0] += 10.0  # ... but it counts on a text-to-video row
    rec3 = Recorder(dit, out2)
    assert flow_loss(rec3, x0, context, CFG, torch.Generator().manual_seed(1), shift=5.0, image_rows=rows) > loss + 1


def test_no_image_rows_is_the_plain_flow_loss():
    torch.manual_seed(0)
    dit = WanTransformer(CFG.dit)
    x0, context = torch.randn(2, 48, 2, 4, 4), torch.randn(2, 5, CFG.dit.text_dim)
    cover = torch.rand(2, 2, 4, 4)
    for kw in ({}, {"cover": cover}):
        plain = flow_loss(dit, x0, context, CFG, torch.Generator().manual_seed(3), shift=5.0, **kw)
        none = flow_loss(dit, x0, context, CFG, torch.Generator().manual_seed(3), shift=5.0,
                         image_rows=torch.zeros(2, dtype=torch.bool), **kw)
        assert torch.allclose(plain, none, rtol=1e-6)


def test_i2v_round_plan_and_the_other_rounds_are_unchanged():
    r3 = dit_round(CFG, second=False, i2v=True)
    assert (r3.index, r3.steps, r3.i2v_share) == (2, CFG.dit_steps_i2v, CFG.dit_i2v_share)
    assert r3.lr == CFG.dit_lr * CFG.dit_i2v_lr_scale and r3.swap_share == r3.crop_share == 0
    assert dit_round(CFG, second=True).i2v_share == dit_round(CFG, second=False).i2v_share == 0


def test_first_frames_are_whole_8bit_frames_of_one_aspect():
    import random
    images, cover = first_frame_batch(CFG, random.Random(0))
    assert images.shape[:3] == (CFG.vae_first_frame_batch, 3, 1) and cover.shape[1:3] == (1, 1)
    assert images.shape[-2:] in ((128, 128), (128, 224), (224, 128))
    levels = (images + 1) / 2 * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3)


def test_vae_phase4_trains_the_decoder_only_and_lowers_the_first_frame_loss():
    import random
    torch.manual_seed(0)
    vae = WanVAE(CFG.vae)
    encoder = {k: v.clone() for k, v in vae.state_dict().items() if k.startswith(("encoder.", "conv1."))}
    images = first_frame_batch(CFG, random.Random(5))[0][:, :, :, :64, :64]
    before = first_frame_loss(vae, images).item()
    from dataclasses import replace
    vae, info = train_vae(replace(CFG, vae_i2v_steps=10, vae_first_frame_batch=1, warmup=1), vae=vae, phases=(4,))
    after = first_frame_loss(vae, images).item()
    assert info["phase4"]["steps"] == 10 and after < before
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in encoder.items())


def test_i2v_stages_run_on_the_files_of_the_earlier_ones(tmp_path: Path):
    from dataclasses import replace
    torch.manual_seed(0)
    tokenizer = train_demo_tokenizer(CFG)
    (tmp_path / "diffusion_models").mkdir()
    (tmp_path / "text_encoders").mkdir()
    (tmp_path / "vae").mkdir()
    save_vae(WanVAE(CFG.vae), tmp_path / MODEL_FILES["vae"], metadata={"training": json.dumps({"phase3": {}})})
    save_dit(WanTransformer(CFG.dit), tmp_path / MODEL_FILES["dit"], metadata={"training": json.dumps({"dit": 1})})
    save_text_encoder(build_text_encoder(CFG.t5, tokenizer.vocab_size), tokenizer, tmp_path / MODEL_FILES["text_encoder"])
    cfg = replace(CFG, i2v_clips=4, dit_steps_i2v=3, dit_i2v_share=1.0)
    run(tmp_path, cfg, "vae_i2v")
    assert set(file_training(tmp_path / MODEL_FILES["vae"])) == {"phase3", "phase4"}
    run(tmp_path, cfg, "dit_i2v")
    rounds = file_training(tmp_path / MODEL_FILES["dit"])["rounds"]
    assert rounds["round2"] == {"dit": 1} and rounds["i2v"]["dit"]["steps"] == 3
