"""Keeping the C imaging libraries quiet: their messages duplicate the errors we already raise."""

from __future__ import annotations

import os

_codecs_silenced = False


def silence_codec_messages() -> None:
    """Stop libtiff printing warnings and errors on stderr (the CLI's one-line contract).

    Pillow reports a failed decode as an exception, which becomes the file's `BadImage`; the
    text libtiff also prints from C is a duplicate no caller can catch. libtiff documents a NULL
    handler as "suppress". Best effort: a Pillow built without a findable libtiff keeps its output.
    """
    global _codecs_silenced
    if _codecs_silenced:
        return
    _codecs_silenced = True
    import ctypes
    import ctypes.util
    import glob

    import PIL

    # the copy Pillow's own extension loaded: a wheel bundles it beside the package
    bundled = sorted(glob.glob(os.path.join(os.path.dirname(PIL.__file__), os.pardir, "pillow.libs", "libtiff*.so*")))
    for path in [*bundled, ctypes.util.find_library("tiff")]:
        if not path:
            continue
        try:
            lib = ctypes.CDLL(path)
            for fn in ("TIFFSetWarningHandler", "TIFFSetErrorHandler"):
                getattr(lib, fn).restype = ctypes.c_void_p
                getattr(lib, fn).argtypes = [ctypes.c_void_p]
                getattr(lib, fn)(None)
        except (OSError, AttributeError):
            continue
        return
