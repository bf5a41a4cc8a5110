"""
SOAP (Vyas et al., 2024, "SOAP: Improving and Stabilizing Shampoo using Adam"): Adam run in the eigenbasis of
Shampoo's preconditioner. The maintained implementation of the pytorch-optimizer package, not a copy. For a 2-D
weight W with gradient V (d_out, d_in):

    L <- b2 L + (1 - b2) V V^T,   R <- b2 R + (1 - b2) V^T V           (Shampoo's factors, shampoo_beta = b2)
    Q_L, Q_R: their eigenbases, refreshed every inv_update_freq steps by one power iteration + QR
    V' = Q_L^T V Q_R;  Adam's moments of V' (m from V, projected);  U = Q_L [m' / (sqrt(v') + eps)] Q_R^T
    W <- W - lr U - lr wd W

Close kin of Fixed Fisher: the same Kronecker eigenbasis, with Adam's diagonal second moment in it instead of
the Kronecker eigenvalues plus damping.
"""

from optim.adamw import adamw_param_groups


def soap(model, lr=3e-3, weight_decay=0.01, beta1=0.95, beta2=0.95, eps=1e-8, inv_update_freq=10,
         max_factor_dim=10000):
    """pytorch_optimizer.SOAP over model.parameters() (tied weights once), weight decay on 2-D tensors only.

    Hyperparameters (defaults are the package's): lr=3e-3, weight_decay=0.01 (decoupled), beta1=0.95, beta2=0.95
    (Adam's moments; beta2 also averages L and R), eps=1e-8, inv_update_freq=10 (steps between eigenbasis
    refreshes: SOAP's precondition_frequency), max_factor_dim=10000 (a wider axis, e.g. GPT-2's 50,304-token
    vocabulary, is left unrotated: max_precondition_dim). The names are train.py's config globals, so
    `--inv_update_freq=...` reaches SOAP as it reaches the Kronecker methods.

    Caveats:
    - The first step only initialises L, R and the bases; the weights first move on the second step.
    - Vectors (biases, norm gains) get plain Adam: precondition_1d is off.
    """
    from pytorch_optimizer import SOAP  # imports torch.distributed.tensor: a second, so only when SOAP is used

    groups = adamw_param_groups(model.parameters(), weight_decay)
    return SOAP(groups, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, eps=eps,
                precondition_frequency=inv_update_freq, max_precondition_dim=max_factor_dim)
