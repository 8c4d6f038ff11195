"""OpenCV / scikit-image side of align-opencv.slow.test.ts (Debian's python3-opencv and python3-skimage).

For each case in <dir>/cases.json ({"landmarks": [[x, y] x5], "shape": [h, w]}) and its image <dir>/img<i>.npy
(uint8 HxWx3): estimates the similarity to the ArcFace template with skimage's SimilarityTransform (the estimator of
InsightFace's face_align.norm_crop), warps with cv2.warpAffine(img, M, (112, 112), borderValue=0.0) as norm_crop
does, and writes <dir>/m<i>.npy (float64 2x3) and <dir>/crop<i>.npy (uint8 112x112x3). The warp of each case is also
done with the matrix given in the case ("given", when present) into <dir>/given<i>.npy.
"""
import json
import sys

import cv2
import numpy as np
from skimage import transform

# as InsightFace's IJB evaluation builds it: the 96x112 template in float32, shifted by 8.0 in x (in float32)
ARCFACE = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]], dtype=np.float32)
ARCFACE[:, 0] += 8.0


def main():
    d = sys.argv[1]
    with open(f"{d}/cases.json") as f:
        cases = json.load(f)
    for i, c in enumerate(cases):
        img = np.load(f"{d}/img{i}.npy")
        t = transform.SimilarityTransform()
        t.estimate(np.array(c["landmarks"], dtype=np.float32), ARCFACE)
        m = t.params[0:2, :]
        np.save(f"{d}/m{i}.npy", m.astype(np.float64))
        np.save(f"{d}/crop{i}.npy", cv2.warpAffine(img, m, (112, 112), borderValue=0.0))
        if "given" in c:
            np.save(f"{d}/given{i}.npy", cv2.warpAffine(img, np.array(c["given"], dtype=np.float64).reshape(2, 3), (112, 112), borderValue=0.0))


if __name__ == "__main__":
    main()
