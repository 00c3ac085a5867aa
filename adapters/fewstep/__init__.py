"""Few-step generators on Fashion-MNIST: a rectified-flow ``teacher``, its TDM student
``tdm`` (arXiv 2503.06674), RL of the student with non-differentiable rewards ``tdm_r1`` (arXiv
2603.07700) and a new control for the one-step student ``nct`` (arXiv 2506.19741). Shared parts:
:mod:`.net`, :mod:`.flow`, :mod:`.common`; light declarations in :mod:`.params`."""
