"""Light declarations of the few-step family (imports no torch): Params and Budget of ``teacher``,
``tdm``, ``tdm_r1`` and ``nct`` and what they are (:func:`bench.registry.declare_adapter`), so
`bench validate` checks a few-step suite without loading torch.

Papers: TDM (Trajectory Distribution Matching) arXiv 2503.06674; TDM-R1 arXiv 2603.07700; NCT
(Noise Consistency Training) arXiv 2506.19741. Every choice they leave open at this scale is a field.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.adapter import AdapterParams
from bench.registry import declare_adapter


class FewStepBudget(BaseModel):
    """Training budget of every stage; a stage's cache key holds only its own fields (and those of
    the stages it starts from), so methods of one suite share the teacher and the students."""

    model_config = ConfigDict(extra="forbid")
    teacher_steps: int = Field(3000, ge=1, description="Adam steps of the rectified-flow teacher")
    teacher_batch: int = Field(128, gt=0, description="images per teacher step")
    teacher_lr: float = Field(2e-3, gt=0, description="teacher Adam learning rate (cosine to 10%, 5% warm-up)")
    train_images: int | None = Field(None, gt=0, description="teacher trains on the first N train images (None = all)")
    tdm_steps: int = Field(400, ge=1, description="TDM distillation iterations (one fake + one generator update each)")
    tdm_batch: int = Field(64, gt=0, description="trajectories per TDM iteration (groups x group size)")
    lr_generator: float = Field(1e-4, gt=0, description="Adam lr of the student (betas 0, 0.999; TDM-R1 note: 7.5e-5)")
    lr_fake: float = Field(3e-4, gt=0, description="Adam lr of the fake score (betas 0, 0.999)")
    r1_epochs: int = Field(150, ge=0, description="TDM-R1 epochs after TDM (one rollout of groups x group size each)")
    r1_groups: int = Field(10, ge=1, description="conditions (classes) per TDM-R1 epoch")
    r1_group_size: int = Field(8, ge=2, description="trajectories per condition (G of the group advantages)")
    lr_surrogate: float = Field(3e-4, gt=0, description="Adam lr of the surrogate reward model (betas 0.9, 0.999)")
    nct_steps: int = Field(600, ge=0, description="NCT adapter Adam steps")
    nct_batch: int = Field(64, gt=0, description="noises per NCT step")
    lr_adapter: float = Field(1e-3, gt=0, description="NCT adapter Adam lr")


class FlowParams(AdapterParams):
    """The rectified-flow network and sampler (shared by every method of the family)."""

    width: int = Field(256, ge=8, description="hidden units of the velocity MLP")
    parameterisation: Literal["x0", "velocity"] = Field(
        "x0", description="what the MLP's head predicts: x0 (v = (x - x0_hat) / s; full rank, see net.py) or velocity "
                          "(the former network: every velocity in one width-dimensional affine subspace)")
    x0_loss_weight_cap: float = Field(100.0, gt=0, description="teacher, x0 form: the v-loss is ||x0_hat - x0||^2 / s^2; "
                                      "its weight 1 / s^2 is capped here (min-SNR-style truncation, Hang et al. arXiv "
                                      "2303.09556), i.e. the exact v-loss for s >= cap^-1/2 (0.1 at 100)")
    depth: int = Field(3, ge=1, description="residual blocks of the velocity MLP")
    label_dropout: float = Field(0.1, ge=0, lt=1, description="teacher: label dropped to the null class "
                                 "(for classifier-free guidance) with this probability")
    cfg_scale: float = Field(1.0, ge=0, description="sampling guidance w: v = v_u + w (v_c - v_u); 1 = none "
                             "(1 NFE per step), else 2 NFE per step")
    default_steps: int = Field(4, ge=1, description="NFE-steps when the harness asks for the default")
    shift: float = Field(3.0, gt=0, description="time-grid shift S(u) = s u / (1 + (s-1) u) (SD3; TDM-R1 uses 3)")


class TeacherParams(FlowParams):
    default_steps: int = Field(16, ge=1, description="Euler steps when the harness asks for the default")


class TDMParams(FlowParams):
    """TDM (arXiv 2503.06674, Sec. 3): the student's per-step outputs matched to the teacher's
    marginals by reverse-KL distribution matching with a fake score (DMD-style) at every step."""

    student_steps: int = Field(4, ge=1, description="K: the trajectory the student is distilled on")
    dm_weight: float = Field(1.0, ge=0, description="weight of the distribution-matching direction D_kl")
    guide_weight: float = Field(0.3, ge=0, description="weight of the CFG-as-reward direction D_cfg "
                                "(TDM-R1 script: 0.3); 0 = pure distribution matching")
    guide_scale: float = Field(2.0, ge=0, description="D_cfg = scale (x0_ref(c) - x0_ref(null)) (script: 3.5)")
    fake_ref_weight: float = Field(0.02, ge=0, description="fake-score regulariser ||v_F - v_ref||^2 (script: 0.02)")
    fake_target: Literal["x0_hat", "state"] = Field(
        "x0_hat", description="fake-score regression target on x_tau re-noised from the student's next state "
        "x_{j+1}: x0_hat = (x_tau - x0_hat) / tau (the TDM-R1 script); state = denoising score matching of "
        "q(x_tau | x_{j+1}) (the fake score then models the law of the re-noised states themselves)")
    dm_t_min: float = Field(0.0, ge=0, lt=1, description="the generator's re-noising level tau (of D_kl, D_cfg) is "
                            "drawn above max(s_{j+1}, dm_t_min); 0 = the script (above s_{j+1} only). 0.6 was needed "
                            "by the former velocity head, whose low-noise denoiser passed the noise through")
    tau_gap: float = Field(0.02, ge=0, lt=1, description="tau drawn in the unshifted coordinate in "
                           "[S^-1(s_{j+1}) + gap, 1] (script: 20/1000)")


class TDMR1Params(TDMParams):
    """TDM-R1 (arXiv 2603.07700): a surrogate reward model learnt by group DPO on the states of the
    deterministic trajectory, whose implicit-reward gradient is an extra generator direction."""

    reward: str = Field("judge", description="bench.rewards name scored on the final uint8 images")
    reward_weight: float = Field(0.7, ge=0, description="weight of the surrogate direction D_R (script: 0.7); "
                                 "0 = the no-reward ablation (exactly TDM's update)")
    surrogate_states: Literal["trajectory", "final"] = Field(
        "trajectory", description="trajectory: DGPO on the stored states x_{j'+1}, P(j') ~ j'+1 (per-step "
                                  "reward signals); final: on the final image only (ablation)")
    beta_dpo: float = Field(1.0, gt=0, description="beta of the group DPO weight sigmoid(beta sum A (l - l_ref) / G)")
    surrogate_ref_weight: float = Field(0.001, ge=0, description="surrogate penalty ||v_R - v_ref||^2 (script: 0.001)")
    surrogate_cfg: float = Field(1.0, ge=0, description="CFG scale on the surrogate in D_R (script: 2.5-4.5; "
                                 "1 = none, so D_R holds only the learnt reward)")
    t_min_generator: float = Field(0.4, ge=0, lt=1, description="rho of D_R drawn in [max(s_{j+1}, t_min), 1] "
                                   "(script: 0.25-0.4)")
    t_min_surrogate: float = Field(0.55, ge=0, lt=1, description="surrogate tau lower bound (script: 0.3-0.55)")
    adv_clip: float = Field(5.0, gt=0, description="advantages clipped to [-clip, clip]")
    trust_region: float = Field(0.05, ge=0, description="surrogate trust region to ref (script: 0.05): a sample's "
                                "DSM error l_i is detached when its mean ||v_R - v_ref||^2 exceeds this and it still "
                                "moves in its advantage's direction (A (l_ref - l) > 0); 0 = off")
    ppo_clip: float = Field(1e-3, ge=0, description="PPO-style clip c against the slow 'old' surrogate (EMA, decay "
                            "min(0.3, 0.001 + 0.001 k)): rho = exp(l_old - l); l_i detached when A > 0 and rho > 1 + c "
                            "or A < 0 and rho < 1 - c (script: 1e-3 OCR/GenEval, 2e-3 IR/HPS); 0 = off")
    best_of_n: int = Field(0, ge=0, description="0: the RL-trained generator; N >= 2: no RL, the TDM student "
                           "keeps the highest-reward of N candidates per image (NFE N x steps; ablation)")

    @model_validator(mode="after")
    def _n(self):
        if self.best_of_n == 1:
            raise ValueError("best_of_n: 1 is the plain student; use 0 (RL) or N >= 2")
        if self.reward_weight and self.t_min_generator < self.dm_t_min:
            raise ValueError(f"t_min_generator ({self.t_min_generator}) < dm_t_min ({self.dm_t_min}): the reward "
                             "direction's noise band must lie inside the distribution-matching band (else levels "
                             "below dm_t_min are pushed by the reward alone)")
        return self


class NCTParams(FlowParams):
    """NCT (arXiv 2506.19741, Algorithm 1): a zero-initialised adapter on a frozen one-step generator."""

    default_steps: int = Field(1, ge=1, description="NFE (the base generator is one-step)")
    base_steps: int = Field(1, ge=1, description="K of the TDM student used as the base (1: a 1-step distillation)")
    control: Literal["lowres"] = Field("lowres", description="the new control: lowres = the 4x4-mean-pooled 7x7 "
                                       "image in [-1, 1] (the paper's 8x super-resolution condition)")
    variant: Literal["nct", "regression", "none"] = Field(
        "nct", description="nct: noise-consistency + boundary losses; regression: naive adapter, ||f(z', c) - x||^2 "
                           "with z' independent of c (baseline); none: the untrained (zero) adapter = uncontrolled")
    consistency_weight: float = Field(1.0, ge=0, description="weight of L_con (0 = ablation without it)")
    boundary: Literal["primal_dual", "fixed", "off"] = Field(
        "primal_dual", description="boundary-loss weight lambda: dual ascent, fixed at lambda_0, or off (ablation)")
    lambda0: float = Field(1.0, ge=0, description="initial / fixed boundary weight lambda_0 (not given in the paper)")
    dual_lr: float = Field(0.05, ge=0, description="eta of lambda <- max(0, lambda + eta (L_bound - xi))")
    margin: float = Field(4.0, ge=0, description="xi, the boundary-loss margin: sum of squares per image, pixels "
                          "in [-1, 1] (the note's 1.0 for pixels in [0, 1]; not given in the paper)")
    levels: int = Field(20, ge=1, description="N levels of the noise chain, sigma_k = sin(pi k / (2N))")
    adapter_width: int = Field(64, ge=4, description="channels of the adapter's control encoder")
    adapter_output_skip: bool = Field(True, description="the adapter also adds a zero-initialised [784] term to the "
                                      "velocity (ControlNet's zero connection at full resolution); False = hidden "
                                      "blocks only")


def data_problems(ds_spec) -> list[str]:
    """Missing Fashion-MNIST files, for ``bench validate`` (existence only)."""
    from bench.errors import DatasetMissing

    try:
        if ds_spec.name == "fmnist":
            from bench.data.fmnist import fmnist_dir

            fmnist_dir(ds_spec.root)
    except DatasetMissing as e:
        return [str(e)]
    return []


CAPABILITIES = frozenset({"generate"})
for _name, _impl, _params in (("teacher", "adapters.fewstep.teacher:TeacherAdapter", TeacherParams),
                              ("tdm", "adapters.fewstep.tdm:TDMAdapter", TDMParams),
                              ("tdm_r1", "adapters.fewstep.tdm_r1:TDMR1Adapter", TDMR1Params),
                              ("nct", "adapters.fewstep.nct:NCTAdapter", NCTParams)):
    declare_adapter(_name, _impl, _params, CAPABILITIES, FewStepBudget, data_problems=data_problems)
