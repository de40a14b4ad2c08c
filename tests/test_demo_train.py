"""Training smoke tests for the demo model: each stage's loss goes down on a tiny fixed batch; files round-trip."""
import random
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.config import WanConfig
from wan_core.demo.captions import caption
from wan_core.demo.compact_text import compact_text
from wan_core.demo.export import save_dit, save_text_encoder, save_vae
from wan_core.demo.train import (AttributeHeads, TrainConfig, _vae_batch, object_coverage, latent_footprint, build_text_encoder, encode_text_train, flow_loss,
                                 contrast_loss, swapped_caption, train_demo_tokenizer, vae_losses)
from wan_core.demo.captions import parse_caption
from wan_core.demo.world import HELD_OUT, MOTIONS, OBJECT_COLOURS, SHAPES, sample_scene
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
    video = _vae_batch(cfg, random.Random(0))  # [1, 3, 5, 32, 32]

    def loss():
        return vae_losses(vae, video, cfg, torch.Generator().manual_seed(0))["loss"]
    before, after = _steps(vae.parameters(), loss)
    assert after < 0.9 * before


def test_vae_temporal_term_sees_error_that_changes_between_frames(monkeypatch):
    """The phase-3 term is 0 for a reconstruction error that is the same in every frame and grows with an error
    that flips from frame to frame; decoder-only steps on it reduce it."""
    torch.manual_seed(0)
    vae = WanVAE(CFG.vae)
    cfg = replace(CFG, vae_frames=9, vae_batch=1)
    video = _vae_batch(cfg, random.Random(1))  # [1, 3, 9, 32, 32]
    losses = vae_losses(vae, video, cfg, torch.Generator().manual_seed(0), temporal_weight=1.0)
    assert "temporal" in losses and losses["temporal"] > 0
    assert "temporal" not in vae_losses(vae, video, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(losses["loss"], losses["recon"] + cfg.vae_moment_weight * losses["moment"]
                          + losses["temporal"])
    steady = torch.full_like(video, 0.1)
    flip = steady * torch.tensor([1.0, -1.0] * 4 + [1.0]).view(1, 1, 9, 1, 1)
    from wan_core.demo import train as T
    with monkeypatch.context() as m:  # stand-in codec: the reconstruction is the input plus a chosen error
        m.setattr(T, "vae_encode_train", lambda v, x: torch.zeros(1, 48, 3, 2, 2))
        for error, expect_zero in ((steady, True), (flip, False)):
            m.setattr(T, "vae_decode_train", lambda v, z, e=error: video + e)
            t = vae_losses(vae, video, cfg, torch.Generator().manual_seed(0), temporal_weight=1.0)["temporal"]
            assert (t.item() < 1e-7) == expect_zero, (t.item(), expect_zero)
    for module in (vae.encoder, vae.conv1):
        module.requires_grad_(False)

    def temporal():
        return vae_losses(vae, video, cfg, torch.Generator().manual_seed(0), temporal_weight=1.0)["loss"]
    before, after = _steps([p for p in vae.parameters() if p.requires_grad], temporal)
    assert after < 0.9 * before


def test_dit_and_text_encoder_steps_reduce_the_flow_loss(tokenizer):
    dit, text, x0 = _dit_and_text(tokenizer)
    prompts = ["a red circle moving left on a blue background", "蓝色背景上，一个红色的圆形向左移动"]

    def loss():
        return flow_loss(dit, text, tokenizer, x0, prompts, CFG, torch.Generator().manual_seed(0))
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
            return flow_loss(dit, text, tokenizer, x0, prompts, CFG, torch.Generator().manual_seed(0), cover=cover)
    plain = loss(None)
    assert torch.allclose(loss(torch.zeros(2, 2, 4, 4)), plain)
    cover = torch.zeros(2, 2, 4, 4)
    cover[:, :, :2] = 1.0
    assert not torch.allclose(loss(cover), plain)  # the covered half now counts (1 + object_weight) times


def test_shape_difference_rings_the_object_where_shapes_disagree():
    from wan_core.demo.world import make_clip, shape_difference
    frames, scene = make_clip(4, triple=("red", "square", "static"), n_objects=1, aspect="1:1", exclude=())
    diff = shape_difference(scene)  # [T, H, W]
    o = scene.objects[0]
    cx, cy, r = o.x * scene.width, o.y * scene.height, o.size * scene.width
    assert diff.shape == frames.shape[:3] and 0 <= diff.min() and diff.max() <= 1
    assert diff[0, int(cy), int(cx)] == 0  # every shape covers the centre
    assert diff[0, 2, 2] == 0  # and none reaches far outside
    assert diff[0, int(cy + 0.9 * r), int(cx + 0.9 * r)] > 0.9  # a square's corner: no circle or triangle there
    ring = latent_footprint(diff, (7, 8, 8))
    assert ring.shape == (7, 8, 8) and ring.max() > 0.3 and (ring > 0).float().mean() < 0.5


def test_shape_weight_and_low_shift_change_the_loss_only_when_on(tokenizer):
    dit, text, x0 = _dit_and_text(tokenizer)
    prompts = ["a red circle", "a blue square"]
    cover, shape_cover = torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4)
    shape_cover[:, :, 1:3, 1:3] = 0.5

    def loss(**kw):
        with torch.no_grad():
            parts = {}
            out = flow_loss(dit, text, tokenizer, x0, prompts, CFG, torch.Generator().manual_seed(0), cover=cover,
                            parts=parts, **kw)
            return out, parts["t"]
    plain, t_plain = loss()
    assert torch.equal(loss(shape_cover=shape_cover, shape_weight=0.0)[0], plain)
    assert not torch.allclose(loss(shape_cover=shape_cover, shape_weight=6.0)[0], plain)
    low, t_low = loss(low_shift_share=0.5)  # row 0 draws its sigma with low_shift (1: uniform) instead of shift 5
    assert t_low[0] < t_plain[0] and t_low[1] == t_plain[1]
    assert torch.equal(loss(low_shift_share=0.0)[1], t_plain)


def test_swapped_caption_changes_one_attribute_and_never_names_a_held_out_triple():
    rng = random.Random(0)
    changed = {"shape": 0, "colour": 0, "motion": 0}
    for i in range(300):
        scene = sample_scene(i, n_objects=1)
        o = scene.objects[0]
        lang = ("en", "zh")[i % 2]
        true = parse_caption(caption(scene, lang, variant=i)).objects[0]
        assert true == (o.colour, o.shape, o.motion)
        wrong = parse_caption(swapped_caption(scene, (lang, i), rng, shape_share=0.5)).objects[0]
        diff = [name for name, a, b in zip(("colour", "shape", "motion"), true, wrong) if a != b]
        assert len(diff) == 1, (true, wrong)
        assert wrong not in HELD_OUT and wrong[0] != scene.background
        changed[diff[0]] += 1
    assert changed["shape"] > 100 and changed["colour"] > 30 and changed["motion"] > 30  # about 150 / 75 / 75


def test_contrast_loss_is_zero_past_the_margin_and_trains_the_prompt_word_to_matter(tokenizer):
    """The hinge: 0 once the wrong caption's object loss exceeds the true one's by the margin (log terms), positive
    before; a few steps on it (with the flow loss) make the DiT's prediction depend on the shape word."""
    torch.manual_seed(0)
    target, v = torch.randn(2, 4, 2, 3, 3), torch.zeros(2, 4, 2, 3, 3)
    cover = torch.ones(2, 2, 3, 3)

    class Fixed(torch.nn.Module):  # a "DiT" whose prediction under the wrong caption is fixed
        def __init__(self, pred):
            super().__init__()
            self.pred, self.blocks, self.cfg = pred, [], CFG.dit  # what compact_text patches: no blocks
            self.text_embedding = torch.nn.Identity()

        def forward(self, xs, t, context):
            return self.pred
    far = target + 3.0 * (v - target)  # 9x the squared error of v: log gap 2.2
    assert contrast_loss(Fixed(far), target, torch.zeros(2), target, v, torch.zeros(2, 3, 8), cover, 0.1).item() == 0
    same = contrast_loss(Fixed(v.clone()), target, torch.zeros(2), target, v, torch.zeros(2, 3, 8), cover, 0.1)
    assert abs(same.item() - 0.1) < 1e-6  # equal losses: the whole margin

    dit, text, x0 = _dit_and_text(tokenizer)
    right, wrong = ["a red square moving left"] * 2, ["a red circle moving left"] * 2
    cover = torch.ones(2, 2, 4, 4)

    def gap():
        parts = {}
        with torch.no_grad():
            flow_loss(dit, text, tokenizer, x0, right, CFG, torch.Generator().manual_seed(1), cover=cover, parts=parts)
            return contrast_loss(dit, parts["xs"], parts["t"], parts["target"], parts["v"],
                                 encode_text_train(text, tokenizer, wrong), cover, 1.0)

    def loss():
        parts = {}
        flow = flow_loss(dit, text, tokenizer, x0, right, CFG, torch.Generator().manual_seed(1), cover=cover,
                         parts=parts)
        return flow + contrast_loss(dit, parts["xs"], parts["t"], parts["target"], parts["v"],
                                    encode_text_train(text, tokenizer, wrong), cover, 1.0)
    before = gap().item()
    _steps(list(dit.parameters()) + list(text.parameters()), loss, n=10)
    assert gap().item() < before - 0.05  # the wrong word now costs more than the right one


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


def test_bf16_autocast_dit_steps_reduce_the_loss_and_keep_fp32_weights(tokenizer):
    from wan_core.demo.train import train_dit
    dit, text, x0 = _dit_and_text(tokenizer)
    scenes = [sample_scene(i, aspect="1:1", n_objects=1) for i in range(2)]
    prompts = [caption(sc, "en") for sc in scenes]
    pools = {"1:1": [(x0[i], scenes[i], torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)) for i in range(2)]}

    def fixed_loss():
        with torch.no_grad():
            return flow_loss(dit, text, tokenizer, x0, prompts, CFG, torch.Generator().manual_seed(0)).item()
    before = fixed_loss()
    cfg = replace(CFG, dit_bf16=True, dit_steps=30, warmup=2, drop_caption=0.0, dit_lr=4e-3)
    _, _, info = train_dit(cfg, pools, tokenizer, resume=(dit, text))  # trains these modules in place
    assert info["steps"] == 30 and all(p.dtype == torch.float32 for p in dit.parameters())
    after = fixed_loss()
    assert after < 0.9 * before



def test_demo_dit_is_wide_enough_for_a_whole_patch():
    """A token must hold all 48 x 1 x 2 x 2 latent values of its patch; narrower, the patch embedding and head drop
    part of the noise for good (the dim-128 demo DiT left a third of it at low sigma)."""
    dit = TrainConfig().dit
    t, h, w = dit.patch_size
    assert dit.dim >= dit.out_dim * t * h * w and dit.dim >= dit.in_dim * t * h * w
    assert dit.dim // dit.num_heads == 128  # the head size infer_config assumes when loading the file


def test_clock_replays_a_time_capped_plan():
    from wan_core.demo.train import _Clock
    clock = _Clock(9000, None, "dit", replan=4084)  # a replay: no time cap, the recorded re-plan
    assert clock.plan(0) == 9000 and clock.plan(99) == 9000  # warmup and early cosine as in the capped run
    assert clock.plan(_Clock.ESTIMATE_AT) == 4084 and clock.plan(500) == 4084
    assert not clock.done(4083) and clock.done(4084)
    assert _Clock(9000, None, "dit").plan(_Clock.ESTIMATE_AT) == 9000  # no cap, no replan: the configured count


def test_shape_probe_reads_object_tokens_of_the_middle_block_and_trains_them(tokenizer):
    """The training-only shape read-out: it sees the first forward pass after reset() only, weighs tokens by object
    coverage, skips dropped captions and two-object scenes, leaves the DiT's output unchanged and detaches cleanly;
    its loss trains the DiT (and the text encoder) to carry the caption's shape word into the object's tokens."""
    from wan_core.demo.train import ShapeProbe
    dit, text, x0 = _dit_and_text(tokenizer)
    torch.manual_seed(1)
    cfg = replace(CFG, dit=replace(CFG.dit, num_layers=2))
    dit = WanTransformer(cfg.dit)
    t = torch.tensor([500.0, 500.0])
    scenes = [sample_scene(3, n_objects=1, triple=("red", "circle", "left"), exclude=()),
              sample_scene(4, n_objects=1, triple=("red", "square", "left"), exclude=())]
    prompts = [caption(sc, "en", 0) for sc in scenes]
    cover = torch.zeros(2, 2, 4, 4)
    cover[:, :, :2, :2] = 1.0  # the object sits in the top-left token of each latent frame
    with torch.no_grad():
        plain = dit(x0, t, encode_text_train(text, tokenizer, prompts))
    probe = ShapeProbe(dit)
    assert probe.block == 0  # num_layers 2: the middle is the first block's output
    assert probe.loss(cover, scenes).item() == 0.0  # nothing seen yet
    with torch.no_grad():
        probed = dit(x0, t, encode_text_train(text, tokenizer, prompts))
    assert torch.equal(plain, probed)  # the hook only reads
    first = probe.hidden
    with torch.no_grad():
        dit(x0 + 1, t, encode_text_train(text, tokenizer, prompts))
    assert probe.hidden is first  # a second pass (e.g. the contrast loss) does not replace the batch's pass
    assert probe.loss(cover, [None, None]).item() == 0.0  # dropped captions: no shape to read
    two = sample_scene(5, n_objects=2, exclude=())
    assert probe.loss(cover, [None, two]).item() == 0.0  # two objects: whose shape? skipped
    other = torch.zeros_like(cover)
    other[:, :, 2:, 2:] = 1.0
    assert probe.loss(cover, scenes).item() != probe.loss(other, scenes).item()  # coverage picks the tokens

    def loss():
        probe.reset()
        dit(x0, t, encode_text_train(text, tokenizer, prompts))
        return probe.loss(cover, scenes)
    before, after = _steps(list(dit.parameters()) + list(text.parameters()) + list(probe.parameters()), loss, n=15)
    assert after < 0.5 * before
    probe.detach()
    assert not dit.blocks[0]._forward_hooks and probe.hidden is None


def test_train_dit_with_the_shape_probe_records_it_and_leaves_no_hook(tokenizer):
    from wan_core.demo.train import train_dit
    dit, text, x0 = _dit_and_text(tokenizer)
    scenes = [sample_scene(i, aspect="1:1", n_objects=1) for i in range(2)]
    pools = {"1:1": [(x0[i], scenes[i], torch.ones(2, 4, 4), torch.zeros(2, 4, 4)) for i in range(2)]}
    cfg = replace(CFG, dit_steps=6, warmup=2, drop_caption=0.0, shape_probe_weight=0.5)
    dit, _, info = train_dit(cfg, pools, tokenizer, resume=None)
    assert len(info["shape_probe_last"]) == 6 and all(v > 0 for v in info["shape_probe_last"])
    assert not any(block._forward_hooks for block in dit.blocks)
    _, _, info = train_dit(replace(cfg, shape_probe_weight=0.0), pools, tokenizer)
    assert "shape_probe_last" not in info  # off: no probe
