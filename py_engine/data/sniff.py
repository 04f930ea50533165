"""What a file is by its first bytes, when it is not the text an importer wants: the signatures
of common binary formats (documents, archives, images, media, executables), shared by the text
and website importers so both refuse the same files with the same words. Pure Python."""

BINARY_SIGNATURES = (
    (b"%PDF-", "a PDF document"), (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"), (b"GIF87a", "a GIF image"), (b"GIF89a", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (or an office document, DOCX/XLSX/EPUB)"),
    (b"\x1f\x8b", "gzip-compressed data"), (b"OggS", "an Ogg media file"),
    (b"\x00asm", "a WebAssembly module"), (b"\x7fELF", "an executable"),
    (b"%!PS", "a PostScript document"), (b"{\\rtf", "an RTF document"),
    (b"SQLite format 3\x00", "an SQLite database"),
)


def binary_kind(data):
    """A description ("a PDF document", ...) of what `data` starts as, or None."""
    head = bytes(data[:16])
    for signature, what in BINARY_SIGNATURES:
        if head.startswith(signature):
            return what
    if head.startswith(b"RIFF") and head[8:12] in (b"WEBP", b"WAVE", b"AVI "):
        return f"a RIFF ({head[8:12].decode().strip()}) file"
    if head[4:8] == b"ftyp":
        return "an MP4/ISO media file"
    return None
