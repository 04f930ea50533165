"""SentencePiece's unigram language model (T5, FLAN-T5, mT5, ALBERT, XLNet): a word cut into the
vocabulary's pieces whose scores (log probabilities) sum highest, as Hugging Face `tokenizers`'
Unigram model cuts it. Pure Python: it runs in the browser, where that library does not.

The word is "word -> ids" part of the one tokenizer.json pipeline (bpe.py's SubwordTokenizer):
normalizing, pre-tokenizing, added tokens, templates and decoding are shared with BPE.

Viterbi over the word's characters: every vocabulary piece that starts at a character gives an
edge from there to its end, scored by the piece's score; a character that no one-character piece
covers gets an edge to the unknown piece scored min_score - 10. The best path ending at each
position is kept; among equal totals the first candidate found wins (starts left to right,
then shorter pieces before longer ones, the unknown edge last), as in the library. Consecutive
unknown pieces fuse into one (the unknown piece's own text among them: the library fuses by
id); an unknown run becomes its UTF-8 bytes as <0xNN> pieces when the model has byte_fallback
and all 256 byte pieces.
"""

UNK_PENALTY = 10.0      # an unknown character scores this much below the lowest piece


class UnigramModel:
    """The "model" section of a tokenizer.json whose type is "Unigram":
    {"vocab": [[piece, score], ...], "unk_id": int or null, "byte_fallback": bool}."""

    def __init__(self, model):
        # tokenizer_file.py has checked the shapes: vocab [[piece, score], ...], unk_id an index
        self.pieces = [piece for piece, _ in model["vocab"]]
        self.scores = [float(score) for _, score in model["vocab"]]
        # piece -> id; a piece listed twice gets its last id, as the library's map does
        self.vocab = {piece: i for i, piece in enumerate(self.pieces)}
        unk_id = model.get("unk_id")
        self.unk_id = unk_id
        self.unk_token = None if unk_id is None else self.pieces[unk_id]
        self.byte_fallback = bool(model.get("byte_fallback"))
        # <0xNN> piece ids (None where missing) when unknown runs fall back to bytes
        self.byte_ids = [self.vocab.get(f"<0x{b:02X}>") for b in range(256)] \
            if self.byte_fallback else None
        self.unk_score = min(self.scores) - UNK_PENALTY
        # A character trie of the pieces: node = {char: child}, the piece's id under None.
        self._trie = {}
        for piece, i in self.vocab.items():
            node = self._trie
            for ch in piece:
                node = node.setdefault(ch, {})
            node[None] = i

    def segment(self, word):
        """The best cut of a word: [(start, end, id)] over its characters, id None for a run
        of unknown characters (fused)."""
        n = len(word)
        # best[k]: (score of the best path ending at k, where its last piece starts, its id)
        best = [None] * (n + 1)
        best[0] = (0.0, -1, None)
        trie, scores, unk_score = self._trie, self.scores, self.unk_score
        for start in range(n):
            here = best[start][0]
            node, single = trie, False
            end = start
            while end < n:
                node = node.get(word[end])
                if node is None:
                    break
                end += 1
                i = node.get(None)
                if i is not None:
                    score = scores[i] + here
                    b = best[end]
                    if b is None or score > b[0]:
                        best[end] = (score, start, i)
                    if end == start + 1:
                        single = True
            if not single:
                if self.unk_id is None:
                    raise ValueError(f"character {word[start]!r} is not in the Unigram "
                                     "vocabulary and the model has no unknown piece (unk_id)")
                score = unk_score + here
                b = best[start + 1]
                if b is None or score > b[0]:
                    best[start + 1] = (score, start, -1)
        out, end, unk_end = [], n, None
        while end > 0:
            _, start, i = best[end]
            if i == -1 or i == self.unk_id:     # unknown: fuse with the unknowns after it
                # (the unknown piece's own text too, as the library fuses by id)
                if unk_end is None:
                    unk_end = end
            else:
                if unk_end is not None:
                    out.append((end, unk_end, None))
                    unk_end = None
                out.append((start, end, i))
            end = start
        if unk_end is not None:
            out.append((0, unk_end, None))
        out.reverse()
        return out

    def word_ids(self, word):
        """Ids of one (normalized, pre-tokenized) word."""
        return self.tokens(word)[0]

    def token_spans(self, word):
        """(start, end) in the word's characters of each of its tokens (word_ids(word)): a
        piece covers its text; the unknown token, or each byte token, its run of unknown
        characters, as the library's offsets give them."""
        return self.tokens(word)[1]

    def unknown_names(self, word):
        """(index, text) of each unknown token of word_ids(word): the library names such a
        token by the characters it replaced, not by the unknown piece."""
        ids, spans = self.tokens(word)
        return tuple((k, word[a:b]) for k, (i, (a, b)) in enumerate(zip(ids, spans))
                     if i == self.unk_id)

    def tokens(self, word):
        """(ids, spans) of a word's tokens."""
        ids, spans = [], []
        for start, end, i in self.segment(word):
            if i is None:
                i = self.vocab.get(word[start:end])
            if i is None:
                byte_ids = self._byte_ids(word[start:end])
                if byte_ids is not None:
                    ids += byte_ids
                    spans += [(start, end)] * len(byte_ids)
                    continue
                i = self.unk_id
            ids.append(i)
            spans.append((start, end))
        return tuple(ids), spans

    def _byte_ids(self, text):
        """The <0xNN> ids of text's UTF-8 bytes, or None without byte fallback or where one
        is missing from the vocabulary (then the run is the unknown token)."""
        if self.byte_ids is None:
            return None
        ids = [self.byte_ids[b] for b in text.encode("utf-8")]
        return None if None in ids else ids
