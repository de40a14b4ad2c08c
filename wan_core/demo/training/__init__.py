"""The demo model's training code, one stage per module; `python -m wan_core.demo.train` runs it.

config.py: TrainConfig (the shipped recipe's values) and the two DiT rounds; clock.py: step counts, time caps and the
learning-rate schedule; text.py: tokenizer, umT5 with autograd, attribute read-out; vae_stage.py: the VAE phases;
latent_cache.py: the DiT's training clips encoded once; dit_round.py: one DiT + umT5 round.
"""
