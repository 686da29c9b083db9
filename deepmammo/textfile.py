"""Read a text file so that a user who gave the wrong file, or one saved in another encoding,
is told which file, line and byte are wrong instead of a bare codec message."""
import os


class TextFileError(ValueError):
    """A text file that is not text in the expected encoding; the message names file and line."""


def decode_text(data, path, what="text", encoding="utf-8"):
    """`data` (bytes) as str; TextFileError naming `path`, the line and the byte when the bytes
    are not `encoding`. A UTF-8 byte-order mark is dropped."""
    if encoding.replace("-", "").lower() in ("utf8", "utf8sig"):
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        raise TextFileError(f"{path}:{line}: byte 0x{byte:02x} is not {exc.encoding.upper()} "
                            f"text (is this a {what} file? save it as UTF-8)") from None


def read_text(path, what="text", encoding="utf-8"):
    """The text of file `path`; FileNotFoundError / IsADirectoryError / TextFileError name it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, f"is a folder, not a {what} file", path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"no such {what} file", path)
    with open(path, "rb") as f:
        data = f.read()
    return decode_text(data, path, what, encoding)
