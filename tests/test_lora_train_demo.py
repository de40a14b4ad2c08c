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
