"""Head pose (yaw, pitch, roll in degrees) from 68 landmarks, by PnP against a generic 3D face.

For comparing poses (the evaluator's pose error is the L2 distance of two such triples); it is not
an accurate absolute head-pose estimator: the 3D model is generic and the focal length guessed.
Conventions: landmarks are (68, 2) (x, y) pixels, pixel centres at integers. The camera frame has
x to the image's right, y down, z away from the camera; the identity rotation is a face looking
straight into the camera. Angles (R = R_y(yaw) R_x(pitch) R_z(roll), rotating the model):
positive yaw turns the nose towards the image's left (the subject turns to their right), positive
pitch tips the nose down, positive roll tilts the face clockwise in the image. A horizontal mirror
negates yaw and roll and keeps pitch.
"""

from __future__ import annotations

import cv2
import numpy as np

#: The 68-point indices the 3D model covers: nose tip, chin, outer eye corners, mouth corners.
POSE_INDICES: tuple[int, ...] = (30, 8, 36, 45, 48, 54)

#: A generic face in the camera frame above (arbitrary units, nose tip at the origin): the
#: six-point model widely used with cv2.solvePnP (as in Satya Mallick's LearnOpenCV head-pose
#: tutorial), with y and z flipped to this module's camera axes. It is mirror symmetric, which
#: makes the mirror property above exact up to landmark noise.
FACE_MODEL_3D: np.ndarray = np.array(
    [
        [0.0, 0.0, 0.0],  # 30 nose tip
        [0.0, 330.0, 65.0],  # 8 chin
        [-225.0, -170.0, 135.0],  # 36 right eye, outer corner (image left)
        [225.0, -170.0, 135.0],  # 45 left eye, outer corner
        [-150.0, 150.0, 125.0],  # 48 right mouth corner
        [150.0, 150.0, 125.0],  # 54 left mouth corner
    ]
)
FACE_MODEL_3D.flags.writeable = False


def _camera(image_size: tuple[int, int]) -> np.ndarray:
    """Pinhole camera with focal length = image width (about a 53 degree field of view)."""
    height, width = image_size[:2]
    return np.array([[width, 0.0, (width - 1) / 2.0], [0.0, width, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def rotation_to_euler(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of R = R_y(yaw) R_x(pitch) R_z(roll)."""
    pitch = np.arcsin(np.clip(-rotation[1, 2], -1.0, 1.0))
    yaw = np.arctan2(rotation[0, 2], rotation[2, 2])
    roll = np.arctan2(rotation[1, 0], rotation[1, 1])
    return float(np.degrees(yaw)), float(np.degrees(pitch)), float(np.degrees(roll))


def head_pose(points68: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of the face whose 68 landmarks are given.

    ``image_size`` is (height, width) of the image the landmarks refer to (it fixes the camera).
    """
    points68 = np.asarray(points68, dtype=np.float64)
    if points68.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points68.shape}")
    image_points = points68[list(POSE_INDICES)]
    camera = _camera(image_size)
    # Start from a frontal face at the distance that matches its eye spacing: the iterative
    # solver then converges to the near-frontal solution instead of a mirrored local minimum.
    eye_span = max(float(np.linalg.norm(image_points[3] - image_points[2])), 1e-3)
    depth = camera[0, 0] * (FACE_MODEL_3D[3, 0] - FACE_MODEL_3D[2, 0]) / eye_span
    nose = image_points[0]
    tvec = np.array(
        [
            (nose[0] - camera[0, 2]) * depth / camera[0, 0],
            (nose[1] - camera[1, 2]) * depth / camera[1, 1],
            depth,
        ]
    )
    rvec = np.zeros(3)
    ok, rvec, tvec = cv2.solvePnP(
        FACE_MODEL_3D, image_points, camera, None, rvec.reshape(3, 1), tvec.reshape(3, 1),
        useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE,
    )  # fmt: skip
    if not ok:
        raise RuntimeError("cv2.solvePnP failed on these landmarks")
    rotation, _ = cv2.Rodrigues(rvec)
    return rotation_to_euler(rotation)


def head_poses(points68: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """``head_pose`` for (N, 68, 2) landmarks of one image size: (N, 3) float64 (yaw, pitch, roll)."""
    points68 = np.asarray(points68)
    return np.array([head_pose(p, image_size) for p in points68], dtype=np.float64).reshape(-1, 3)


def pose_error(pose_a: np.ndarray, pose_b: np.ndarray) -> np.ndarray:
    """L2 distance in degrees between (..., 3) (yaw, pitch, roll) triples, the swap papers' pose error."""
    return np.linalg.norm(np.asarray(pose_a, np.float64) - np.asarray(pose_b, np.float64), axis=-1)
