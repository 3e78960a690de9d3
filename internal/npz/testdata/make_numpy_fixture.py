#!/usr/bin/python3
# Makes the numpy-written fixtures that internal/npz's tests read.
# Run from the repository root:  /usr/bin/python3 internal/npz/testdata/make_numpy_fixture.py
# (needs numpy; Debian's python3-numpy is enough). Output is byte-for-byte deterministic.
#
# numpy.npz             np.savez: the supported dtypes, a 0-d array, an empty array
# numpy_compressed.npz  np.savez_compressed of the same arrays (deflate entries)
# numpy_v2.npz          .npy format versions 2.0 and 3.0 headers
# numpy_fortran.npz     a Fortran-ordered array (must be rejected)
# numpy_bigendian.npz   a '>f4' array (must be rejected)
import io
import os
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def arrays():
    return {
        "f32": (np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5) / 4,
        "f64_scalar": np.array(3.141592653589793, dtype=np.float64),
        "f64": np.array([1e-300, -0.0, 1.5, 2.0 ** 60], dtype=np.float64),
        "i64": np.array([-(2 ** 62), -1, 0, 7], dtype=np.int64),
        "i32": np.arange(8, dtype=np.int32).reshape(2, 2, 2) - 3,
        "u8": np.array([0, 1, 128, 255], dtype=np.uint8),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def normalize(data):
    """Fixed timestamps so reruns give identical bytes."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = info.compress_type
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, src.read(info.filename))
    return out.getvalue()


def save(name, fn, **kw):
    buf = io.BytesIO()
    fn(buf, **kw)
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        f.write(normalize(buf.getvalue()))
    print("wrote", path)


def savez_versions(buf, **kw):
    with zipfile.ZipFile(buf, "w") as z:
        for (name, arr), ver in zip(sorted(kw.items()), [(2, 0), (3, 0)]):
            b = io.BytesIO()
            np.lib.format.write_array(b, arr, version=ver)
            z.writestr(name + ".npy", b.getvalue())


def main():
    save("numpy.npz", np.savez, **arrays())
    save("numpy_compressed.npz", np.savez_compressed, **arrays())
    save("numpy_v2.npz", savez_versions,
         v2=np.arange(5, dtype=np.float64) * 0.5, v3=np.array([[1, 2], [3, 4]], dtype=np.int64))
    save("numpy_fortran.npz", np.savez, ok=np.ones(2, dtype=np.float32),
         fortran=np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
    save("numpy_bigendian.npz", np.savez, big=np.arange(3, dtype=">f4"))


if __name__ == "__main__":
    main()
