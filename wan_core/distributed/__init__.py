"""One video on several processes with torch.distributed (launched by torchrun): Ulysses sequence parallelism and
CFG parallelism for the Wan DiT. docs/scaling.md has the memory and speed model; tests/test_distributed.py the parity.

- ulysses: the all-to-all layout swaps and the sharded self-attention;
- plan: which rank holds which branch and which tokens (ParallelPlan, make_plan);
- cfg_parallel: the two guidance branches on two rank groups;
- dit: parallel_hooks, the sharded forward of the unchanged WanTransformer;
- pipeline: DistributedPipeline (text encoder on rank 0, decode on rank 0);
- launch: the CLI flags and the torchrun process setup.
Nothing here is imported unless a distributed run asks for it.
"""
