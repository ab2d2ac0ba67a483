"""Collider kinematics on numpy arrays of momenta."""

import numpy as np


def pt_eta_phi(px, py, pz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pt = np.hypot(px, py)
    return pt, np.arcsinh(pz / np.maximum(pt, 1e-12)), np.arctan2(py, px)


def delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    dphi = np.mod(phi1 - phi2 + np.pi, 2 * np.pi) - np.pi
    return np.hypot(eta1 - eta2, dphi)


class Momenta:
    """pt, eta and phi of a dataclass with px, py and pz arrays."""

    @property
    def pt(self) -> np.ndarray:
        return np.hypot(self.px, self.py)

    @property
    def eta(self) -> np.ndarray:
        return pt_eta_phi(self.px, self.py, self.pz)[1]

    @property
    def phi(self) -> np.ndarray:
        return np.arctan2(self.py, self.px)
