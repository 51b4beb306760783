"""Adam's and AdamW's update of one tensor as one generated loop: torch.compile of the equations
that minilm/optim/adam.py writes out (the reference, `Adam._update`):

    g <- g + lambda theta                  (Adam)        theta <- (1 - lr lambda) theta   (AdamW)
    m <- m + (1 - beta1) (g - m)
    v <- beta2 v + (1 - beta2) g^2
    theta <- theta - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Written with torch ops, the update makes about ten passes over each tensor (each op reads and
writes it once); compiled, it reads theta, g, m and v once and writes theta, m and v once. The
scalars travel in one tensor, so a new step (new bias corrections, a new learning rate) does not
recompile, and the tensors go in flattened, so one graph with a dynamic length serves them all.
`Adam(..., foreach="compiled")` uses it; tests/test_kernels.py holds it equal to the reference.
"""


from kernels.compile import fused


def adam_update_reference(theta, g, m, v, scalars):
    """One tensor's update in place. theta, g, m, v: (N,) fp32; scalars (8,) fp32, computed in
    double by the caller: 1 - beta1, beta2, 1 - beta2, eps, the decay factor (1 - lr lambda for
    AdamW, else 1), the L2 factor (lambda for Adam, else 0), the step size lr / (1 - beta1^t) and
    1 / sqrt(1 - beta2^t)."""
    one_minus_beta1, beta2, one_minus_beta2, eps, decay, l2, step_size, inv_sqrt_bias2 = scalars.unbind()
    g = g + l2 * theta
    m_new = m + one_minus_beta1 * (g - m)
    v_new = beta2 * v + one_minus_beta2 * g * g
    theta_new = decay * theta - step_size * m_new / (v_new.sqrt() * inv_sqrt_bias2 + eps)
    theta.copy_(theta_new)
    m.copy_(m_new)
    v.copy_(v_new)


adam_update = fused(adam_update_reference)  # one generated loop per dtype; the reference where compile cannot run
