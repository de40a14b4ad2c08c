"""Training smoke tests for the demo model: each stage's loss goes down on a tiny fixed batch; files round-trip."""
import json
import random
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.config import WanConfig
from wan_core.demo.captions import caption
from wan_core.demo.compact_text import compact_text
from wan_core.demo.export import save_dit, save_text_encoder, save_vae
from wan_core.demo.training import vae_stage
from wan_core.demo.training.clock import Clock
from wan_core.demo.training.config import TrainConfig, dit_round
from wan_core.demo.training.dit_round import flow_loss, train_dit
from wan_core.demo.training.latent_cache import CacheEntry, object_coverage
from wan_core.demo.training.text import AttributeHeads, build_text_encoder, encode_text_train, train_demo_tokenizer
from wan_core.demo.training.vae_stage import vae_crops, vae_losses
from wan_core.demo.world import MOTIONS, OBJECT_COLOURS, SHAPES, sample_scene
from wan_core.integrity import read_sidecar, sha256_file
from wan_core.loading import load_dit, load_text_encoder, load_vae
from wan_core.model import WanTransformer
from wan_core.tokenizer import UNK_ID, SpieceTokenizer, tokenizer_to_tensor
from wan_core.vae import WanVAE

CFG = TrainConfig.smoke()


single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)  # small kernels: no OpenMP contention


@pytest.fixture(scope="module")
def tokenizer():
    return train_demo_tokenizer(CFG)


def _dit_and_text(tokenizer):
    """A fresh seeded smoke-size DiT and umT5 with a batch of two latents."""
    torch.manual_seed(0)
    return WanTransformer(CFG.dit), build_text_encoder(CFG.t5, tokenizer.vocab_size), torch.randn(2, 48, 2, 4, 4)


def _flow(dit, text, tokenizer, x0, prompts, seed=0, cfg=CFG, **kw):
    """flow_loss at round 1's shift with the prompts encoded by `text` (with autograd)."""
    context = encode_text_train(text, tokenizer, prompts)
    return flow_loss(dit, x0, context, cfg, torch.Generator().manual_seed(seed), shift=cfg.shift, **kw)


def _steps(params, loss_fn, n=8, lr=3e-3):
    opt = torch.optim.Adam(params, lr=lr)
    first = loss_fn().item()
    for _ in range(n):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    return first, loss_fn().item()


def test_tokenizer_covers_both_languages(tokenizer):
    again = SpieceTokenizer.from_tensor(tokenizer_to_tensor(tokenizer.model_bytes))
    for lang in ("en", "zh"):
        text = caption(sample_scene(3), lang)
        ids, mask = again([text])
        assert UNK_ID not in ids[0, : int(mask.sum())].tolist(), text
        assert torch.equal(ids, tokenizer([text])[0])


def test_vae_steps_reduce_the_loss():
    torch.manual_seed(0)
    vae = WanVAE(CFG.vae)
    cfg = replace(CFG, vae_frames=5, vae_batch=1)
    video, alpha = vae_crops(cfg, random.Random(0))  # [1, 3, 5, 32, 32], [1, 1, 5, 32, 32]

    def loss():
        return vae_losses(vae, video, alpha, cfg, torch.Generator().manual_seed(0))["loss"]
    before, after = _steps(vae.parameters(), loss)
    assert after < 0.9 * before


def test_vae_temporal_term_sees_error_that_changes_between_frames(monkeypatch):
    """The phase-3 term is 0 for a reconstruction error that is the same in every frame and grows with an error
    that flips from frame to frame; decoder-only steps on it reduce it."""
    torch.manual_seed(0)
    vae = WanVAE(CFG.vae)
    cfg = replace(CFG, vae_frames=9, vae_batch=1)
    video, alpha = vae_crops(cfg, random.Random(1))  # [1, 3, 9, 32, 32]
    losses = vae_losses(vae, video, alpha, cfg, torch.Generator().manual_seed(0), temporal_weight=1.0)
    assert "temporal" in losses and losses["temporal"] > 0
    assert "temporal" not in vae_losses(vae, video, alpha, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(losses["loss"], losses["recon"] + cfg.vae_moment_weight * losses["moment"]
                          + cfg.vae_mask_weight * losses["mask"] + losses["temporal"])
    steady = torch.full_like(video, 0.1)
    flip = steady * torch.tensor([1.0, -1.0] * 4 + [1.0]).view(1, 1, 9, 1, 1)
    with monkeypatch.context() as m:  # stand-in codec: the reconstruction is the input plus a chosen error
        m.setattr(vae_stage, "vae_encode_train", lambda v, x: torch.zeros(1, 48, 3, 2, 2))
        for error, expect_zero in ((steady, True), (flip, False)):
            m.setattr(vae_stage, "vae_decode_train", lambda v, z, e=error: video + e)
            t = vae_losses(vae, video, alpha, cfg, torch.Generator().manual_seed(0), temporal_weight=1.0)["temporal"]
            assert (t.item() < 1e-7) == expect_zero, (t.item(), expect_zero)
    for module in (vae.encoder, vae.conv1):
        module.requires_grad_(False)

    def temporal():
        return vae_losses(vae, video, alpha, cfg, torch.Generator().manual_seed(0), temporal_weight=1.0)["loss"]
    before, after = _steps([p for p in vae.parameters() if p.requires_grad], temporal)
    assert after < 0.9 * before


def test_dit_and_text_encoder_steps_reduce_the_flow_loss(tokenizer):
    dit, text, x0 = _dit_and_text(tokenizer)
    prompts = ["a red circle moving left on a blue background", "蓝色背景上，一个红色的圆形向左移动"]

    def loss():
        return _flow(dit, text, tokenizer, x0, prompts)
    before, after = _steps(list(dit.parameters()) + list(text.parameters()), loss)
    assert after < 0.9 * before
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in text.parameters())  # text gets trained too


def test_attribute_heads_label_scenes_and_train_the_text_encoder(tokenizer):
    """The auxiliary read-out: labels name each attribute (object 2 'none' when absent), dropped captions are left
    out, and its loss trains the text encoder to tell two scenes' captions apart in both languages."""
    one = sample_scene(1, n_objects=1, triple=("red", "circle", "left"), background="blue", two_tone=False, exclude=())
    two = sample_scene(2, n_objects=2, exclude=())
    lab1, lab2 = AttributeHeads.labels(one), AttributeHeads.labels(two)
    assert len(lab1) == len(lab2) == 8
    sizes = [len(OBJECT_COLOURS), len(SHAPES), len(MOTIONS)]
    assert lab1[3:6] == sizes  # no second object: the extra "none" class of each slot
    assert all(x < n for x, n in zip(lab2[3:6], sizes))
    torch.manual_seed(0)
    text, heads = build_text_encoder(CFG.t5, tokenizer.vocab_size), AttributeHeads(CFG.t5.d_model)
    prompts = [caption(one, "en", 0), caption(one, "zh", 1), caption(two, "en", 2), caption(two, "zh", 3), ""]
    scenes = [one, one, two, two, None]

    def loss():
        context, mask = encode_text_train(text, tokenizer, prompts, with_mask=True)
        return heads.loss(context, mask, scenes)
    before, after = _steps(list(text.parameters()) + list(heads.parameters()), loss, n=15)
    assert after < 0.5 * before
    context, mask = encode_text_train(text, tokenizer, [""], with_mask=True)
    assert heads.loss(context, mask, [None]).item() == 0.0  # only dropped captions: nothing to read back


def test_object_coverage_marks_the_object_on_the_latent_grid():
    from wan_core.demo.world import make_clip
    frames, scene = make_clip(4, triple=("red", "square", "static"), n_objects=1, aspect="1:1", exclude=())
    cover = object_coverage(frames, (7, 8, 8))
    o = scene.objects[0]
    cy, cx = int(o.y * scene.height / 16), int(o.x * scene.width / 16)
    assert cover.shape == (7, 8, 8) and cover[:, cy, cx].min() > 0.9  # the object's centre is fully covered
    assert cover[:, 0, 0].max() == 0 or cover[:, 7, 7].max() == 0  # a corner far from it is not
    assert 0.05 < cover.mean() < 0.4


def test_object_weighted_flow_loss_reduces_to_plain_mse_without_objects(tokenizer):
    dit, text, x0 = _dit_and_text(tokenizer)
    prompts = ["a red circle", "a blue square"]

    def loss(cover):
        with torch.no_grad():
            return _flow(dit, text, tokenizer, x0, prompts, cover=cover)
    plain = loss(None)
    assert torch.allclose(loss(torch.zeros(2, 2, 4, 4)), plain)
    cover = torch.zeros(2, 2, 4, 4)
    cover[:, :, :2] = 1.0
    assert not torch.allclose(loss(cover), plain)  # the covered half now counts (1 + object_weight) times


def test_compact_text_matches_full_padding():
    torch.manual_seed(0)
    dit = WanTransformer(WanConfig(dim=128, ffn_dim=64, num_heads=1, num_layers=2, in_dim=48, out_dim=48, text_dim=16))
    x, t, context = torch.randn(2, 48, 2, 4, 4), torch.tensor([900.0, 50.0]), torch.randn(2, 6, 16)
    context[1, 4:] = 0  # a shorter prompt in the batch
    ref = dit(x, t, context)
    with compact_text(dit, context.shape[1]):
        fast = dit(x, t, context)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(dit(x, t, context), ref)  # patch removed afterwards


def test_saved_files_load_through_the_normal_loaders(tmp_path, tokenizer):
    torch.manual_seed(0)
    dit, vae = WanTransformer(CFG.dit), WanVAE(CFG.vae)
    text = build_text_encoder(CFG.t5, tokenizer.vocab_size)
    paths = {"dit": tmp_path / "dit.safetensors", "vae": tmp_path / "vae.safetensors", "te": tmp_path / "te.safetensors"}
    save_dit(dit, paths["dit"])
    save_vae(vae, paths["vae"])
    save_text_encoder(text, tokenizer, paths["te"])
    for p in paths.values():
        side = p.with_name(p.name + ".sha256").read_text()
        assert side == f"{sha256_file(p, progress=False)}  {p.name}\n" and read_sidecar(p)
    loaded = load_dit(paths["dit"])
    assert loaded.cfg == dit.cfg and all(torch.equal(v, loaded.state_dict()[k]) for k, v in dit.state_dict().items())
    assert load_vae(paths["vae"]).cfg == vae.cfg
    te = load_text_encoder(paths["te"], dtype=torch.float32)
    prompts = ["a green square moving up on a gray background"]
    want = encode_text_train(text.eval(), tokenizer, prompts)
    got = te.encode(prompts)[0]
    assert torch.allclose(got, want[0, : got.shape[0]], atol=1e-5)
    paths["dit"].write_bytes(paths["dit"].read_bytes()[:-1] + b"\0")  # damage -> the sidecar check fails
    with pytest.raises(Exception, match="(?i)sha256|hash|mismatch"):
        load_dit(paths["dit"])


def test_set_overrides_scalar_fields_and_names_the_valid_ones():
    from wan_core.demo.train import _overrides
    assert _overrides(CFG, ["shift=5", "dit_steps=7"]) == {"shift": 5.0, "dit_steps": 7}
    with pytest.raises(SystemExit, match="object_weight"):
        _overrides(CFG, ["vae=1"])  # a nested config is not a scalar field
    with pytest.raises(SystemExit, match="not a valid int"):
        _overrides(CFG, ["dit_steps=many"])
    assert _overrides(CFG, ["dit_bf16=true"]) == {"dit_bf16": True}
    assert _overrides(CFG, ["dit_bf16=0"]) == {"dit_bf16": False}
    with pytest.raises(SystemExit, match="dit_bf16=true or dit_bf16=false"):
        _overrides(CFG, ["dit_bf16=yes please"])


def _pools(x0, cover=0.0):
    scenes = [sample_scene(i, aspect="1:1", n_objects=1) for i in range(x0.shape[0])]
    return {"1:1": [CacheEntry(x0[i], scenes[i], torch.full(x0.shape[2:], cover), None) for i in range(len(scenes))]}


def test_bf16_autocast_dit_steps_reduce_the_loss_and_keep_fp32_weights(tokenizer):
    dit, text, x0 = _dit_and_text(tokenizer)
    pools = _pools(x0)
    prompts = [caption(e.scene, "en") for e in pools["1:1"]]

    def fixed_loss():
        with torch.no_grad():
            return _flow(dit, text, tokenizer, x0, prompts).item()
    before = fixed_loss()
    cfg = replace(CFG, dit_bf16=True, dit_steps=30, warmup=2, drop_caption=0.0, dit_lr=4e-3)
    _, _, info = train_dit(cfg, pools, tokenizer, plan=dit_round(cfg, False), resume=(dit, text))  # in place
    assert info["steps"] == 30 and all(p.dtype == torch.float32 for p in dit.parameters())
    assert info["threads"] == 1 and "ema_decay" not in info  # round 1: the last weights
    after = fixed_loss()
    assert after < 0.9 * before


def test_the_two_rounds_follow_the_recipe():
    one, two = dit_round(TrainConfig(), False), dit_round(TrainConfig(), True)
    assert (one.index, one.steps, one.shift, one.swap_share, one.crop_share, one.ema_decay) == (0, 12000, 5.0, 0, 0, 0)
    assert (two.index, two.steps, two.shift, two.swap_share, two.crop_share, two.ema_decay) == (
        1, 9000, 6.0, 1.0, 0.5, 0.999)
    assert two.lr == TrainConfig().dit_lr / 2 and one.lr == TrainConfig().dit_lr


def test_demo_dit_is_wide_enough_for_a_whole_patch():
    """A token must hold all 48 x 1 x 2 x 2 latent values of its patch; narrower, the patch embedding and head drop
    part of the noise for good (the dim-128 demo DiT left a third of it at low sigma)."""
    dit = TrainConfig().dit
    t, h, w = dit.patch_size
    assert dit.dim >= dit.out_dim * t * h * w and dit.dim >= dit.in_dim * t * h * w
    assert dit.dim // dit.num_heads == 128  # the head size infer_config assumes when loading the file


def test_clock_replays_a_time_capped_plan():
    clock = Clock(9000, None, "dit", replan=4084)  # a replay: no time cap, the recorded re-plan
    assert clock.plan(0) == 9000 and clock.plan(99) == 9000  # warmup and early cosine as in the capped run
    assert clock.plan(Clock.ESTIMATE_AT) == 4084 and clock.plan(500) == 4084
    assert not clock.done(4083) and clock.done(4084)
    assert Clock(9000, None, "dit").plan(Clock.ESTIMATE_AT) == 9000  # no cap, no replan: the configured count


# The shipped recipe as the README gave it before the defaults became the shipped values, and as it is now.
_OLD_RECIPE = {
    "vae": "--stage vae --budget-minutes 26 --set vae_temporal_steps=0 --set vae_mask_channels=16",
    "dit": "--stage dit --budget-minutes 41 --threads 2 --dit-steps 12000 --set dit_bf16=true "
           "--set vae_mask_channels=16",
    "vae3": "--stage vae3 --budget-minutes 8.5 --threads 2 --set vae_mask_channels=16",
    "dit2": "--stage dit2 --budget-minutes 28 --threads 2 --dit-steps 9000 --set dit_bf16=true "
            "--set shape_swap_share_round2=1.0 --set frame_crop_share_round2=0.5 --set dit_ema_round2=0.999 "
            "--set vae_mask_channels=16",
}
_RECIPE = {"vae": "--stage vae --budget-minutes 26", "dit": "--stage dit --budget-minutes 41 --threads 2",
           "vae3": "--stage vae3 --budget-minutes 8.5 --threads 2",
           "dit2": "--stage dit2 --budget-minutes 28 --threads 2"}


@pytest.mark.parametrize("stage", list(_RECIPE))
def test_the_recipe_commands_parse_and_the_old_ones_train_the_same(stage):
    from wan_core.demo.train import config_from_args, parser
    old, new = (parser().parse_args(["--out", "models", *c[stage].split()]) for c in (_OLD_RECIPE, _RECIPE))
    assert (old.stage, old.threads, old.budget_minutes) == (new.stage, new.threads, new.budget_minutes)
    assert config_from_args(new) == TrainConfig()
    # the old vae command set vae_temporal_steps=0 to skip phase 3, which --stage vae no longer runs
    assert replace(config_from_args(old), vae_temporal_steps=900) == TrainConfig()


def test_set_and_dit_steps_are_checked():
    from wan_core.demo.train import config_from_args, parser
    args = parser().parse_args(["--out", "m", "--stage", "dit2", "--dit-steps", "40", "--set", "seed=2"])
    cfg = config_from_args(args)
    assert (cfg.dit_steps, cfg.dit_steps_round2, cfg.seed) == (TrainConfig().dit_steps, 40, 2)
    with pytest.raises(SystemExit, match="--dit-steps 40 with --stage vae3"):
        config_from_args(parser().parse_args(["--out", "m", "--stage", "vae3", "--dit-steps", "40"]))
    with pytest.raises(SystemExit, match="expected FIELD=VALUE"):
        config_from_args(parser().parse_args(["--out", "m", "--stage", "vae", "--set", "contrast_weight=1"]))


def test_the_four_stages_write_loadable_files_that_record_how_they_were_made(tmp_path):
    """vae, dit, vae3, dit2 in the smoke config, into one folder: each file records its stage's steps, the thread
    count and the config; vae3 keeps the encoder (the latents the DiT was trained on) and the VAE's history."""
    from safetensors import safe_open

    from wan_core.demo.export import MODEL_FILES
    from wan_core.demo.train import file_training, run

    def meta(name):
        with safe_open(str(tmp_path / MODEL_FILES[name]), framework="pt") as f:
            return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    cfg = replace(CFG, clips=6, dit_batch=2, frame_crop_batch=3)
    run(tmp_path, cfg, "vae")
    assert sorted(file_training(tmp_path / MODEL_FILES["vae"])) == ["phase0", "phase1", "phase2"]
    run(tmp_path, cfg, "dit")
    first, _ = meta("dit")
    assert first["round"] == "0" and json.loads(first["training"])["dit"]["steps"] == cfg.dit_steps
    _, before = meta("vae")
    run(tmp_path, cfg, "vae3")
    vae_meta, after = meta("vae")
    assert sorted(json.loads(vae_meta["training"])) == ["phase0", "phase1", "phase2", "phase3"]
    assert json.loads(vae_meta["train_config"]) == json.loads(first["train_config"])
    frozen = [k for k in before if k.startswith(("encoder.", "conv1."))]  # phase 3 trains the decoder side alone
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    summary = run(tmp_path, cfg, "dit2")
    assert summary["dit"]["ema_decay"] == cfg.dit_ema_round2 and summary["dit"]["threads"] == 1
    for name in ("dit", "text_encoder"):
        m, _ = meta(name)
        assert m["round"] == "1" and json.loads(m["training"]) == summary
        assert json.loads(m["train_config"])["dit_steps_round2"] == cfg.dit_steps_round2
    assert load_dit(tmp_path / MODEL_FILES["dit"]).cfg == cfg.dit
    with pytest.raises(ValueError, match="stage 'all'"):
        run(tmp_path, cfg, "all")
