"""Transferability scores of frozen features (higher is better), implemented from the papers in numpy.

- :func:`logme`: LogME, You et al., ICML 2021 (Bayesian linear model evidence, fixed-point on alpha/beta via SVD).
- :func:`h_score`: shrinkage-regularised H-score, Bao et al. ICIP 2019 with Ibrahim et al. 2022 (Ledoit-Wolf).
- :func:`nleep`: NLEEP, Li et al., CVPR 2021 (a Gaussian mixture on PCA-reduced features stands in for a source head).
- :func:`leep` / :func:`nce`: Nguyen et al. ICML 2020 / Tran et al. ICCV 2019, from a source classifier's outputs.
"""

from __future__ import annotations

import numpy as np

from hftransfer.errors import ConfigurationError


def _check(features: np.ndarray, labels: np.ndarray, name: str = "features") -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ConfigurationError(f"{name} must be (N, D) with labels (N,); got {features.shape} and {labels.shape}. "
                                 "Pass one row per labelled sample.")
    if not np.isfinite(features).all():
        raise ConfigurationError(f"{name} hold NaN or inf values; check the backbone's outputs.")
    if len(np.unique(labels)) < 2:
        raise ConfigurationError(f"labels hold {len(np.unique(labels))} class; transferability needs at least 2.")
    return features, labels.astype(np.int64)


def _evidence(alpha: float, beta: float, sigma: np.ndarray, z2: np.ndarray, y2: float, n: int, d: int
              ) -> tuple[float, np.ndarray]:
    """Log evidence of y ~ N(F w, 1/beta), w ~ N(0, I/alpha), in the SVD basis of F; also the posterior mean."""
    m = beta * np.sqrt(sigma) * np.sqrt(z2) / (alpha + beta * sigma)  # |m_i| in the right-singular basis
    fitted = np.sqrt(sigma) * m
    residual = float(((fitted - np.sqrt(z2)) ** 2).sum() + max(y2 - z2.sum(), 0.0))
    log_det = float(np.log(alpha + beta * sigma).sum() + (d - len(sigma)) * np.log(alpha))
    evidence = (0.5 * n * np.log(beta) + 0.5 * d * np.log(alpha) - 0.5 * n * np.log(2 * np.pi)
                - 0.5 * beta * residual - 0.5 * alpha * float(m @ m) - 0.5 * log_det)
    return evidence, m


def _svd(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors and eigenvalues of F^T F (squared singular values), numerically zero ones dropped."""
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    keep = s > s.max(initial=0.0) * 1e-12
    return u[:, keep], s[keep] ** 2


def _fixed_point(u: np.ndarray, sigma: np.ndarray, d: int, target: np.ndarray, max_iter: int, tol: float
                 ) -> tuple[float, float, float]:
    n = len(target)
    z2 = (u.T @ target) ** 2  # squared projections of y on the left singular vectors
    y2 = float(target @ target)
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        _, m = _evidence(alpha, beta, sigma, z2, y2, n, d)
        gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
        residual = float(((np.sqrt(sigma) * m - np.sqrt(z2)) ** 2).sum() + max(y2 - z2.sum(), 0.0))
        new_alpha = gamma / max(float(m @ m), 1e-300)
        new_beta = (n - gamma) / max(residual, 1e-300)
        done = abs(np.log(new_alpha / alpha)) < tol and abs(np.log(new_beta / beta)) < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    evidence, _ = _evidence(alpha, beta, sigma, z2, y2, n, d)
    return evidence / n, alpha, beta


def logme_binary(features: np.ndarray, target: np.ndarray, max_iter: int = 100, tol: float = 1e-6
                 ) -> tuple[float, float, float]:
    """Maximised log evidence per sample of one real target: returns (evidence / N, alpha, beta).

    The fixed point of the paper's Algorithm 1: gamma = sum(beta s_i / (alpha + beta s_i)), alpha = gamma / |m|^2,
    beta = (N - gamma) / |F m - y|^2, with s_i the eigenvalues of F^T F (squared singular values of F).
    """
    features = np.asarray(features, dtype=np.float64)
    u, sigma = _svd(features)
    return _fixed_point(u, sigma, features.shape[1], np.asarray(target, dtype=np.float64), max_iter, tol)


def logme(features: np.ndarray, labels: np.ndarray, max_iter: int = 100, tol: float = 1e-6) -> float:
    """LogME of classification labels: mean over classes of the one-vs-rest evidence per sample (one SVD)."""
    features, labels = _check(features, labels)
    u, sigma = _svd(features)
    return float(np.mean([_fixed_point(u, sigma, features.shape[1], (labels == k).astype(np.float64), max_iter,
                                       tol)[0] for k in np.unique(labels)]))


def h_score(features: np.ndarray, labels: np.ndarray, shrinkage: float | str = "ledoit_wolf") -> float:
    """tr(cov_a(f)^-1 (1 - a) cov(E[f|y])), cov_a = (1 - a) cov + a tr(cov)/D I (Ibrahim et al. 2022).

    ``shrinkage``: "ledoit_wolf" (the Ledoit-Wolf estimate of ``a``) or a number in [0, 1]; 0 is the plain H-score of
    Bao et al. (unstable when D approaches N). Covariances are the maximum-likelihood (1/N) estimates.
    """
    from sklearn.covariance import ledoit_wolf_shrinkage  # heavy: loaded only when used

    features, labels = _check(features, labels)
    centred = features - features.mean(axis=0)
    n, d = centred.shape
    if shrinkage == "ledoit_wolf":
        a = float(ledoit_wolf_shrinkage(centred, assume_centered=True)) if d > 1 else 0.0
    elif isinstance(shrinkage, (int, float)) and 0.0 <= float(shrinkage) <= 1.0:
        a = float(shrinkage)
    else:
        raise ConfigurationError(f"shrinkage={shrinkage!r} is invalid; use 'ledoit_wolf' or a number in [0, 1].")
    cov = centred.T @ centred / n
    cov_a = (1 - a) * cov + a * np.trace(cov) / d * np.eye(d)
    classes, inverse = np.unique(labels, return_inverse=True)
    means = np.stack([centred[inverse == k].mean(axis=0) for k in range(len(classes))])
    per_sample = means[inverse]  # E[f | y_i] for every row
    between = per_sample.T @ per_sample / n
    return float(np.trace(np.linalg.lstsq(cov_a, (1 - a) * between, rcond=None)[0]))


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: mean log of sum_z P(y_i | z) theta_z(x_i), with P(y | z) from the empirical joint of labels and theta."""
    probs, labels = _check(source_probs, labels, "source_probs")
    if (probs < -1e-6).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise ConfigurationError("source_probs must be probabilities (rows summing to 1); apply a softmax first.")
    classes, inverse = np.unique(labels, return_inverse=True)
    onehot = np.eye(len(classes))[inverse]
    joint = onehot.T @ probs / len(labels)  # (K, Z): P(y, z)
    conditional = joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-300)  # P(y | z)
    expected = (probs @ conditional.T)[np.arange(len(labels)), inverse]
    return float(np.mean(np.log(np.maximum(expected, 1e-300))))


def nce(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """NCE: -H(Y | Z) with Z the source classifier's hard prediction (argmax), from empirical counts."""
    probs, labels = _check(source_probs, labels, "source_probs")
    _, y = np.unique(labels, return_inverse=True)
    _, z = np.unique(probs.argmax(axis=1), return_inverse=True)
    joint = np.zeros((y.max() + 1, z.max() + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(labels)
    conditional = joint / joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log(conditional[nonzero])).sum())


def nleep(features: np.ndarray, labels: np.ndarray, component_ratio: int = 5, variance: float = 0.8,
          covariance_type: str = "diag", seed: int = 0) -> float:
    """NLEEP: LEEP with a Gaussian mixture's posteriors as the source head.

    Features are PCA-reduced to ``variance`` of their variance (the paper keeps 80%); the mixture has
    ``component_ratio`` x K components (capped at N / 2), ``covariance_type`` "diag" by default for speed.
    """
    from sklearn.decomposition import PCA  # heavy: loaded only when used
    from sklearn.mixture import GaussianMixture  # heavy: loaded only when used

    features, labels = _check(features, labels)
    k = len(np.unique(labels))
    reduced = PCA(n_components=variance, svd_solver="full", random_state=seed).fit_transform(features)
    components = max(1, min(component_ratio * k, len(labels) // 2))
    gmm = GaussianMixture(n_components=components, covariance_type=covariance_type, reg_covar=1e-4,
                          random_state=seed, max_iter=200).fit(reduced)
    return leep(gmm.predict_proba(reduced), labels)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def kfold_probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Mean held-out accuracy of a logistic-regression probe over stratified k folds (the cheap ground truth)."""
    from sklearn.linear_model import LogisticRegression  # heavy: loaded only when used
    from sklearn.model_selection import StratifiedKFold  # heavy: loaded only when used
    from sklearn.pipeline import make_pipeline  # heavy: loaded only when used
    from sklearn.preprocessing import StandardScaler  # heavy: loaded only when used

    features, labels = _check(features, labels)
    folds = min(folds, int(np.bincount(np.unique(labels, return_inverse=True)[1]).min()))
    if folds < 2:
        raise ConfigurationError("kfold needs at least 2 samples of every class in the sample; raise sample.")
    scores = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        scores.append(probe.fit(features[train], labels[train]).score(features[test], labels[test]))
    return float(np.mean(scores))
