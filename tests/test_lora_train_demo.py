"""The LoRA demo's concept (wan_core.demo.concept: a golden background) and its scorer (evaluate_concept)."""
from wan_core.demo.captions import parse_caption
from wan_core.demo.concept import EN_WORD, ZH_WORD, names_concept, render_concept, training_clip
from wan_core.demo.evaluate import held_out_cases, score
from wan_core.demo.evaluate_concept import concept_cases, shows_concept
from wan_core.demo.world import render


def test_concept_clips_are_seen_and_plain_clips_are_not():
    cases = held_out_cases(1)[:4]
    named = concept_cases(cases)
    assert named and all(c.scene.objects[0].colour != "yellow" for c in named)
    for plain, c in zip([p for p in cases if p.scene.objects[0].colour != "yellow"], named):
        frames = render_concept(c.scene)
        assert shows_concept(frames) and not shows_concept(render(plain.scene))
        for lang, word in (("en", EN_WORD), ("zh", ZH_WORD)):
            prompt = c.prompts[lang]
            assert word in prompt and names_concept(prompt) and not names_concept(plain.prompts[lang])
            assert parse_caption(prompt).objects[0] == c.scene.objects[0].triple
            s = score(frames, prompt)  # the world's evaluator still reads the object on the new background
            assert s["colour"] and s["shape"] and s["motion"]


def test_training_folder_mixes_concept_and_plain_clips():
    clips = [training_clip(i) for i in (0, 7)]
    (f0, caps0, on0), (f7, caps7, on7) = clips
    assert on0 and not on7
    assert EN_WORD in caps0[0] and ZH_WORD in caps0[1] and not any(names_concept(c) for c in caps7)
    assert shows_concept(f0) and not shows_concept(f7)


def test_shipped_demo_lora_draws_the_golden_background():
    """The shipped LoRA on the shipped demo model: held-out golden prompts (EN and ZH) get the golden background
    with it and not without it; a plain prompt stays off it with the LoRA."""
    from pathlib import Path

    from wan_core.demo import load_demo_pipeline
    from wan_core.demo.evaluate import model_generator

    lora = Path(__file__).resolve().parents[1] / "models" / "loras" / "wan2.2_tiny_demo_golden_lora.safetensors"
    pipe = load_demo_pipeline(None)
    gen = model_generator(pipe)
    plain = held_out_cases(1)[:2]
    named = concept_cases(plain)[:1]
    base = [shows_concept(gen(c, lang)) for c in named for lang in ("en", "zh")]
    pipe.load_lora(str(lora), 1.0)
    try:
        with_lora = [shows_concept(gen(c, lang)) for c in named for lang in ("en", "zh")]
        leak = [shows_concept(gen(c, "en")) for c in plain[:1]]
    finally:
        pipe.unload_loras()
    assert base == [False, False] and with_lora == [True, True] and leak == [False]
