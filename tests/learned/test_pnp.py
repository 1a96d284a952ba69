"""Plug-and-play: the noise level reaching the denoiser, linear denoisers against the closed-form
(dense scipy) solution, the contraction of PnP-ADMM/HQS with a Lipschitz-bounded DnCNN (Ryu et
al., ICML 2019), derivatives, and the errors of what is not supported."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import invjax as ij
from invjax.learned.networks.dncnn import DnCNN
from invjax.learned import HQS, DenoiserPrior, PnP, admm_contraction, hqs_contraction

N = 16
A_CROSS = 0.05  # psf [[0,a,0],[a,1-4a,a],[0,a,0]]: symbol 1 - 4a + 2a(cos w1 + cos w2) in [1 - 8a, 1]


def _blur(dtype=np.float64):
    a = A_CROSS
    psf = np.array([[0, a, 0], [a, 1 - 4 * a, a], [0, a, 0]], dtype)
    return ij.operators.Convolution(psf, (N, N))


def _spectrum_bounds():
    mu = (1 - 8 * A_CROSS) ** 2  # attained at (pi, pi): N even
    return mu, 1.0


def _data(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((N, N))
    x[4:12, 4:12] = 1.0
    x[6:9, 2:7] = 0.5
    A = _blur(dtype)
    y = np.asarray(A(x.astype(dtype))) + 0.02 * rng.standard_normal((N, N))
    return A, y.astype(dtype)


def _laplacian_symbol():
    w1 = 2 * np.pi * np.arange(N) / N
    w2 = 2 * np.pi * np.arange(N // 2 + 1) / N
    return 4 - 2 * np.cos(w1)[:, None] - 2 * np.cos(w2)[None, :]


KAPPA = 30.0


def heat_denoiser(v, sigma):
    """Gaussian smoothing exp(-kappa sigma^2 Lap) on the torus: linear, symmetric, 0 < G <= I."""
    g = jnp.exp(-KAPPA * sigma**2 * jnp.asarray(_laplacian_symbol(), v.dtype))
    return jnp.fft.irfft2(jnp.fft.rfft2(v) * g, s=v.shape).astype(v.dtype)


def _dense(apply):
    """The matrix of a linear map on N x N images (float64)."""
    basis = jnp.eye(N * N, dtype=jnp.float64).reshape(N * N, N, N)
    return np.asarray(jax.vmap(apply)(basis)).reshape(N * N, N * N).T


def sigma_recorder(v, sigma):
    return jnp.full_like(v, sigma)


# ---- the noise level -----------------------------------------------------------------------------
def test_prox_runs_the_denoiser_at_sqrt_step_times_weight():
    prior = DenoiserPrior(sigma_recorder)
    v = jnp.zeros((4, 5))
    np.testing.assert_allclose(prior.prox(v, 0.09), 0.3, rtol=1e-6)
    np.testing.assert_allclose((0.25 * prior).prox(v, 0.64), np.sqrt(0.25 * 0.64), rtol=1e-6)  # Scaled: step*weight
    assert PnP is DenoiserPrior

    class WithDenoise:  # an object with a denoise method (not callable itself)
        def denoise(self, v, sigma):
            return v + sigma

    np.testing.assert_allclose(DenoiserPrior(WithDenoise()).prox(v, 0.04), 0.2, rtol=1e-6)


def test_admm_passes_weight_over_rho():
    A, y = _data(np.float32)
    w, rho = 0.01, 0.5
    problem = ij.Problem(A, y, DenoiserPrior(sigma_recorder), weight=w)
    admm = ij.solve(problem, ij.solvers.ADMM(rho=rho, adapt_iters=0, max_iters=1, check_every=1))
    np.testing.assert_allclose(admm.state.z[0], np.sqrt(w / rho), rtol=1e-6)
    # (FISTA's sqrt(tau w) and HQS's sqrt(w / rho) are pinned by the closed forms below)


# ---- a linear denoiser is the prox of a quadratic: closed-form solutions -------------------------
@pytest.mark.parametrize("solver", ["ADMM", "FISTA", "HQS"])
def test_linear_denoiser_solution_matches_dense_scipy_solve(x64, solver):
    # D = G = exp(-kappa sigma^2 Lap) is the prox (step 1) of phi(x) = x^T (G^-1 - I) x / 2. ADMM with
    # penalty rho solves min ||Ax - y||^2/2 + rho phi(x) (G at sigma = sqrt(w/rho)); FISTA with step
    # tau solves it with phi / tau (G at sqrt(tau w)); HQS's fixed point has A^T A + rho (I - G).
    A, y = _data()
    w, rho, tau = 0.02, 0.5, 0.9
    eye = np.eye(N * N)
    if solver == "ADMM":
        s, sigma = ij.solvers.ADMM(rho=rho, adapt_iters=0, tol=1e-11, max_iters=3000), np.sqrt(w / rho)
        make = lambda G: rho * (np.linalg.inv(G) - eye)  # noqa: E731
    elif solver == "FISTA":
        s, sigma = ij.solvers.FISTA(step_size=tau, tol=1e-11, max_iters=3000), np.sqrt(tau * w)
        make = lambda G: (np.linalg.inv(G) - eye) / tau  # noqa: E731
    else:
        s, sigma = HQS(rho=rho, tol=1e-12, max_iters=3000), np.sqrt(w / rho)
        make = lambda G: rho * (eye - G)  # noqa: E731
    sol = ij.solve(ij.Problem(A, y, DenoiserPrior(heat_denoiser), weight=w), s)
    assert bool(sol.stats.converged)
    assert np.isnan(float(sol.stats.objective))  # no value: NaN, not an exception
    Am = _dense(A.mv)
    G = _dense(lambda v: heat_denoiser(v, sigma))
    assert np.allclose(G, G.T, atol=1e-12)
    ref = scipy.linalg.solve(Am.T @ Am + make(G), Am.T @ y.ravel(), assume_a="sym").reshape(N, N)
    assert np.linalg.norm(sol.x - ref) / np.linalg.norm(ref) < 1e-7


# ---- Ryu et al. (ICML 2019): a residual with Lipschitz constant eps < 1 gives contractions ------
@pytest.fixture(scope="module")
def lipschitz_net():
    return DnCNN(depth=3, width=8, noise_level_input=True, spectral_norm=True, lipschitz=0.5, key=jax.random.PRNGKey(0))


def test_pnp_admm_with_lipschitz_residual_contracts_at_the_predicted_rate(x64, lipschitz_net):
    eps = lipschitz_net.residual_lipschitz
    mu, L = _spectrum_bounds()
    rho = float(np.sqrt(mu * L))
    A, y = _data()
    problem = ij.Problem(A, y, DenoiserPrior(lipschitz_net), weight=0.02**2).checked()
    for alpha in (1.0, 1.7):
        q = admm_contraction(eps, rho, mu, L, relaxation=alpha)
        assert q < 1
        solver = ij.solvers.ADMM(rho=rho, relaxation=alpha, adapt_iters=0)
        step = jax.jit(lambda st: solver.step(problem, st))
        st = solver.init(problem, jnp.zeros((N, N)))
        # the fixed-point variable s = z + u (the input of the denoising step) obeys s+ = T(s)
        # with T q-Lipschitz, so successive differences shrink by q at least
        s_old, diffs = st.z[0] + st.u[0], []
        for _ in range(25):
            st = step(st)
            s = st.z[0] + st.u[0]
            diffs.append(float(jnp.linalg.norm(s - s_old)))
            s_old = s
        diffs = np.array(diffs)
        assert diffs[0] > 0
        ratios = diffs[1:] / diffs[:-1]
        assert np.all(ratios <= q * (1 + 1e-6)), (alpha, q, ratios.max())
        assert diffs[-1] <= q ** (len(diffs) - 1) * diffs[0] * (1 + 1e-6)


def test_pnp_hqs_with_lipschitz_residual_converges(x64, lipschitz_net):
    eps = lipschitz_net.residual_lipschitz
    mu, _ = _spectrum_bounds()
    rho = 0.3
    q = hqs_contraction(eps, rho, mu)
    assert q < 1
    A, y = _data()
    problem = ij.Problem(A, y, DenoiserPrior(lipschitz_net), weight=0.02**2).checked()
    solver = HQS(rho=rho)
    step = jax.jit(lambda st: solver.step(problem, st))
    st = solver.init(problem, jnp.zeros((N, N)))
    z_old, diffs = st.z[0], []
    for _ in range(15):
        st = step(st)
        diffs.append(float(jnp.linalg.norm(st.z[0] - z_old)))
        z_old = st.z[0]
    ratios = np.array(diffs[1:]) / np.array(diffs[:-1])
    assert np.all(ratios <= q * (1 + 1e-6)), (q, ratios.max())


# ---- transforms and derivatives ----------------------------------------------------------------
def test_unrolled_derivative_matches_central_differences_and_implicit_raises(x64):
    A, y = _data()
    solver = ij.solvers.ADMM(rho=0.5, adapt_iters=0, max_iters=40, diff="unroll")

    @jax.jit
    def loss(w):
        return jnp.sum(ij.solve(ij.Problem(A, y, DenoiserPrior(heat_denoiser), weight=w), solver).x ** 2)

    w, h = 0.02, 1e-6
    g = float(jax.grad(loss)(w))
    fd = float((loss(w + h) - loss(w - h)) / (2 * h))
    assert abs(g - fd) <= 1e-5 * abs(fd) and abs(fd) > 0
    for implicit in (ij.solvers.ADMM(rho=0.5, adapt_iters=0, max_iters=20), ij.solvers.FISTA(max_iters=20)):
        def loss_implicit(w, implicit=implicit):
            return jnp.sum(ij.solve(ij.Problem(A, y, DenoiserPrior(heat_denoiser), weight=w), implicit).x ** 2)

        with pytest.raises(TypeError, match=r"DenoiserPrior.*no optimality condition.*diff='unroll'"):
            jax.grad(loss_implicit)(w)


@pytest.mark.slow  # a few seconds of compilation; kept out of the 10-minute default run
def test_gradient_reaches_the_network_parameters_and_vmap_over_data():
    A, y = _data(np.float32)
    net = DnCNN(depth=2, width=4, noise_level_input=True, key=jax.random.PRNGKey(1))
    solver = ij.solvers.ADMM(rho=0.5, adapt_iters=0, max_iters=10, diff="unroll")

    def loss(net, y):
        return jnp.mean((ij.solve(ij.Problem(A, y, DenoiserPrior(net), weight=1e-3), solver).x - 0.5) ** 2)

    value_and_grad = eqx.filter_value_and_grad(loss)
    ys = jnp.stack([y, 0.5 * y])
    values, grads = eqx.filter_jit(eqx.filter_vmap(value_and_grad, in_axes=(None, 0)))(net, ys)
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves) and any(float(jnp.abs(g).max()) > 0 for g in leaves)
    # the batch against one solve at a time
    single = eqx.filter_jit(value_and_grad)
    for i in range(2):
        v, g = single(net, ys[i])
        np.testing.assert_allclose(values[i], v, rtol=1e-5)
        np.testing.assert_allclose(grads.weights[0][i], g.weights[0], rtol=1e-4, atol=1e-7)


# ---- what is not supported ------------------------------------------------------------------------
def test_not_a_functional_and_clear_errors():
    A, y = _data(np.float32)
    prior = DenoiserPrior(heat_denoiser)
    assert np.isnan(float(prior(jnp.ones((3, 3)))))
    with pytest.raises(NotImplementedError, match="no gradient"):
        prior.grad(jnp.ones((3, 3)))
    with pytest.raises(TypeError, match=r"`denoiser` must be callable.*got int"):
        DenoiserPrior(3)
    with pytest.raises(ValueError, match=r"must return the shape of its input \(4, 4\), got \(2,\)"):
        DenoiserPrior(lambda v, s: jnp.zeros(2)).prox(jnp.zeros((4, 4)), 0.1)
    with pytest.raises(ValueError, match=r"`step` must be finite and >= 0, got -0.1"):
        prior.prox(jnp.zeros((4, 4)), -0.1)
    with pytest.raises(TypeError, match=r"`v` must be real"):
        prior.prox(jnp.zeros((4, 4), jnp.complex64), 0.1)
    problem = ij.Problem(A, y, prior, weight=0.01)
    for smooth_only, needs in ((ij.solvers.CG(), r"a quadratic \(SquaredL2\)"), (ij.solvers.Landweber(), "a smooth")):
        with pytest.raises(TypeError, match=rf"{type(smooth_only).__name__} needs {needs} regulariser, got DenoiserPrior; use FISTA"):
            ij.solve(problem, smooth_only)
    with pytest.raises(TypeError, match=r"HQS needs a DenoiserPrior regulariser.*got regulariser TV"):
        ij.solve(ij.Problem(A, y, ij.functionals.TV(), weight=0.01), HQS(rho=1.0))
    with pytest.raises(ValueError, match=r"HQS: `rho` must be given"):
        HQS()
    with pytest.raises(TypeError, match=r"HQS needs a scalar `weight`, got shape \(16, 16\)"):
        ij.solve(ij.Problem(A, y, prior, weight=np.full((N, N), 0.01, np.float32)), HQS(rho=1.0))
