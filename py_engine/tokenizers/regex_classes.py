"""The Unicode classes of the regexes in tokenizer.json files, as Hugging Face `tokenizers`
(Oniguruma) matches them, written out as code point ranges (hex, "a-b" or "a"): \\p{L} and its
parts Lu, Ll, Lt, Lm, Lo, \\p{M}, \\p{N}, \\p{P}, \\p{S}. Python's `re` has none of them, and
`unicodedata` follows the interpreter's Unicode version, not the library's, so the ranges were
read from the library itself (one Split pre-tokenizer per class over every code point):

    python -m py_engine.tokenizers.regex_classes        # prints them again, from the library

tests/test_tokenizer_bpe.py checks every class against the library on every code point.
WHITESPACE_WORD is the Whitespace pre-tokenizer's word class, UNICODE_SCRIPTS the
UnicodeScripts pre-tokenizer's scripts and STRIPPED_MARKS what StripAccents removes (not regex
classes).
GPT-4o's and Mistral's tekken patterns (Phi-4-mini, Mistral Nemo) use the letter subclasses.
"""

# One class per key; a line never splits a range (each ends with a space).
CLASSES = {
    "Lu": (
        "41-5a c0-d6 d8-de 100 102 104 106 108 10a 10c 10e 110 112 114 116 118 11a 11c 11e 120 "
        "122 124 126 128 12a 12c 12e 130 132 134 136 139 13b 13d 13f 141 143 145 147 14a 14c 14e "
        "150 152 154 156 158 15a 15c 15e 160 162 164 166 168 16a 16c 16e 170 172 174 176 178-179 "
        "17b 17d 181-182 184 186-187 189-18b 18e-191 193-194 196-198 19c-19d 19f-1a0 1a2 1a4 "
        "1a6-1a7 1a9 1ac 1ae-1af 1b1-1b3 1b5 1b7-1b8 1bc 1c4 1c7 1ca 1cd 1cf 1d1 1d3 1d5 1d7 1d9 "
        "1db 1de 1e0 1e2 1e4 1e6 1e8 1ea 1ec 1ee 1f1 1f4 1f6-1f8 1fa 1fc 1fe 200 202 204 206 208 "
        "20a 20c 20e 210 212 214 216 218 21a 21c 21e 220 222 224 226 228 22a 22c 22e 230 232 "
        "23a-23b 23d-23e 241 243-246 248 24a 24c 24e 370 372 376 37f 386 388-38a 38c 38e-38f "
        "391-3a1 3a3-3ab 3cf 3d2-3d4 3d8 3da 3dc 3de 3e0 3e2 3e4 3e6 3e8 3ea 3ec 3ee 3f4 3f7 "
        "3f9-3fa 3fd-42f 460 462 464 466 468 46a 46c 46e 470 472 474 476 478 47a 47c 47e 480 48a "
        "48c 48e 490 492 494 496 498 49a 49c 49e 4a0 4a2 4a4 4a6 4a8 4aa 4ac 4ae 4b0 4b2 4b4 4b6 "
        "4b8 4ba 4bc 4be 4c0-4c1 4c3 4c5 4c7 4c9 4cb 4cd 4d0 4d2 4d4 4d6 4d8 4da 4dc 4de 4e0 4e2 "
        "4e4 4e6 4e8 4ea 4ec 4ee 4f0 4f2 4f4 4f6 4f8 4fa 4fc 4fe 500 502 504 506 508 50a 50c 50e "
        "510 512 514 516 518 51a 51c 51e 520 522 524 526 528 52a 52c 52e 531-556 10a0-10c5 10c7 "
        "10cd 13a0-13f5 1c89 1c90-1cba 1cbd-1cbf 1e00 1e02 1e04 1e06 1e08 1e0a 1e0c 1e0e 1e10 "
        "1e12 1e14 1e16 1e18 1e1a 1e1c 1e1e 1e20 1e22 1e24 1e26 1e28 1e2a 1e2c 1e2e 1e30 1e32 "
        "1e34 1e36 1e38 1e3a 1e3c 1e3e 1e40 1e42 1e44 1e46 1e48 1e4a 1e4c 1e4e 1e50 1e52 1e54 "
        "1e56 1e58 1e5a 1e5c 1e5e 1e60 1e62 1e64 1e66 1e68 1e6a 1e6c 1e6e 1e70 1e72 1e74 1e76 "
        "1e78 1e7a 1e7c 1e7e 1e80 1e82 1e84 1e86 1e88 1e8a 1e8c 1e8e 1e90 1e92 1e94 1e9e 1ea0 "
        "1ea2 1ea4 1ea6 1ea8 1eaa 1eac 1eae 1eb0 1eb2 1eb4 1eb6 1eb8 1eba 1ebc 1ebe 1ec0 1ec2 "
        "1ec4 1ec6 1ec8 1eca 1ecc 1ece 1ed0 1ed2 1ed4 1ed6 1ed8 1eda 1edc 1ede 1ee0 1ee2 1ee4 "
        "1ee6 1ee8 1eea 1eec 1eee 1ef0 1ef2 1ef4 1ef6 1ef8 1efa 1efc 1efe 1f08-1f0f 1f18-1f1d "
        "1f28-1f2f 1f38-1f3f 1f48-1f4d 1f59 1f5b 1f5d 1f5f 1f68-1f6f 1fb8-1fbb 1fc8-1fcb "
        "1fd8-1fdb 1fe8-1fec 1ff8-1ffb 2102 2107 210b-210d 2110-2112 2115 2119-211d 2124 2126 "
        "2128 212a-212d 2130-2133 213e-213f 2145 2183 2c00-2c2f 2c60 2c62-2c64 2c67 2c69 2c6b "
        "2c6d-2c70 2c72 2c75 2c7e-2c80 2c82 2c84 2c86 2c88 2c8a 2c8c 2c8e 2c90 2c92 2c94 2c96 "
        "2c98 2c9a 2c9c 2c9e 2ca0 2ca2 2ca4 2ca6 2ca8 2caa 2cac 2cae 2cb0 2cb2 2cb4 2cb6 2cb8 "
        "2cba 2cbc 2cbe 2cc0 2cc2 2cc4 2cc6 2cc8 2cca 2ccc 2cce 2cd0 2cd2 2cd4 2cd6 2cd8 2cda "
        "2cdc 2cde 2ce0 2ce2 2ceb 2ced 2cf2 a640 a642 a644 a646 a648 a64a a64c a64e a650 a652 "
        "a654 a656 a658 a65a a65c a65e a660 a662 a664 a666 a668 a66a a66c a680 a682 a684 a686 "
        "a688 a68a a68c a68e a690 a692 a694 a696 a698 a69a a722 a724 a726 a728 a72a a72c a72e "
        "a732 a734 a736 a738 a73a a73c a73e a740 a742 a744 a746 a748 a74a a74c a74e a750 a752 "
        "a754 a756 a758 a75a a75c a75e a760 a762 a764 a766 a768 a76a a76c a76e a779 a77b "
        "a77d-a77e a780 a782 a784 a786 a78b a78d a790 a792 a796 a798 a79a a79c a79e a7a0 a7a2 "
        "a7a4 a7a6 a7a8 a7aa-a7ae a7b0-a7b4 a7b6 a7b8 a7ba a7bc a7be a7c0 a7c2 a7c4-a7c7 a7c9 "
        "a7cb-a7cc a7d0 a7d6 a7d8 a7da a7dc a7f5 ff21-ff3a 10400-10427 104b0-104d3 10570-1057a "
        "1057c-1058a 1058c-10592 10594-10595 10c80-10cb2 10d50-10d65 118a0-118bf 16e40-16e5f "
        "1d400-1d419 1d434-1d44d 1d468-1d481 1d49c 1d49e-1d49f 1d4a2 1d4a5-1d4a6 1d4a9-1d4ac "
        "1d4ae-1d4b5 1d4d0-1d4e9 1d504-1d505 1d507-1d50a 1d50d-1d514 1d516-1d51c 1d538-1d539 "
        "1d53b-1d53e 1d540-1d544 1d546 1d54a-1d550 1d56c-1d585 1d5a0-1d5b9 1d5d4-1d5ed "
        "1d608-1d621 1d63c-1d655 1d670-1d689 1d6a8-1d6c0 1d6e2-1d6fa 1d71c-1d734 1d756-1d76e "
        "1d790-1d7a8 1d7ca 1e900-1e921 "
    ),
    "Ll": (
        "61-7a b5 df-f6 f8-ff 101 103 105 107 109 10b 10d 10f 111 113 115 117 119 11b 11d 11f "
        "121 123 125 127 129 12b 12d 12f 131 133 135 137-138 13a 13c 13e 140 142 144 146 148-149 "
        "14b 14d 14f 151 153 155 157 159 15b 15d 15f 161 163 165 167 169 16b 16d 16f 171 173 175 "
        "177 17a 17c 17e-180 183 185 188 18c-18d 192 195 199-19b 19e 1a1 1a3 1a5 1a8 1aa-1ab 1ad "
        "1b0 1b4 1b6 1b9-1ba 1bd-1bf 1c6 1c9 1cc 1ce 1d0 1d2 1d4 1d6 1d8 1da 1dc-1dd 1df 1e1 1e3 "
        "1e5 1e7 1e9 1eb 1ed 1ef-1f0 1f3 1f5 1f9 1fb 1fd 1ff 201 203 205 207 209 20b 20d 20f 211 "
        "213 215 217 219 21b 21d 21f 221 223 225 227 229 22b 22d 22f 231 233-239 23c 23f-240 242 "
        "247 249 24b 24d 24f-293 295-2af 371 373 377 37b-37d 390 3ac-3ce 3d0-3d1 3d5-3d7 3d9 3db "
        "3dd 3df 3e1 3e3 3e5 3e7 3e9 3eb 3ed 3ef-3f3 3f5 3f8 3fb-3fc 430-45f 461 463 465 467 469 "
        "46b 46d 46f 471 473 475 477 479 47b 47d 47f 481 48b 48d 48f 491 493 495 497 499 49b 49d "
        "49f 4a1 4a3 4a5 4a7 4a9 4ab 4ad 4af 4b1 4b3 4b5 4b7 4b9 4bb 4bd 4bf 4c2 4c4 4c6 4c8 4ca "
        "4cc 4ce-4cf 4d1 4d3 4d5 4d7 4d9 4db 4dd 4df 4e1 4e3 4e5 4e7 4e9 4eb 4ed 4ef 4f1 4f3 4f5 "
        "4f7 4f9 4fb 4fd 4ff 501 503 505 507 509 50b 50d 50f 511 513 515 517 519 51b 51d 51f 521 "
        "523 525 527 529 52b 52d 52f 560-588 10d0-10fa 10fd-10ff 13f8-13fd 1c80-1c88 1c8a "
        "1d00-1d2b 1d6b-1d77 1d79-1d9a 1e01 1e03 1e05 1e07 1e09 1e0b 1e0d 1e0f 1e11 1e13 1e15 "
        "1e17 1e19 1e1b 1e1d 1e1f 1e21 1e23 1e25 1e27 1e29 1e2b 1e2d 1e2f 1e31 1e33 1e35 1e37 "
        "1e39 1e3b 1e3d 1e3f 1e41 1e43 1e45 1e47 1e49 1e4b 1e4d 1e4f 1e51 1e53 1e55 1e57 1e59 "
        "1e5b 1e5d 1e5f 1e61 1e63 1e65 1e67 1e69 1e6b 1e6d 1e6f 1e71 1e73 1e75 1e77 1e79 1e7b "
        "1e7d 1e7f 1e81 1e83 1e85 1e87 1e89 1e8b 1e8d 1e8f 1e91 1e93 1e95-1e9d 1e9f 1ea1 1ea3 "
        "1ea5 1ea7 1ea9 1eab 1ead 1eaf 1eb1 1eb3 1eb5 1eb7 1eb9 1ebb 1ebd 1ebf 1ec1 1ec3 1ec5 "
        "1ec7 1ec9 1ecb 1ecd 1ecf 1ed1 1ed3 1ed5 1ed7 1ed9 1edb 1edd 1edf 1ee1 1ee3 1ee5 1ee7 "
        "1ee9 1eeb 1eed 1eef 1ef1 1ef3 1ef5 1ef7 1ef9 1efb 1efd 1eff-1f07 1f10-1f15 1f20-1f27 "
        "1f30-1f37 1f40-1f45 1f50-1f57 1f60-1f67 1f70-1f7d 1f80-1f87 1f90-1f97 1fa0-1fa7 "
        "1fb0-1fb4 1fb6-1fb7 1fbe 1fc2-1fc4 1fc6-1fc7 1fd0-1fd3 1fd6-1fd7 1fe0-1fe7 1ff2-1ff4 "
        "1ff6-1ff7 210a 210e-210f 2113 212f 2134 2139 213c-213d 2146-2149 214e 2184 2c30-2c5f "
        "2c61 2c65-2c66 2c68 2c6a 2c6c 2c71 2c73-2c74 2c76-2c7b 2c81 2c83 2c85 2c87 2c89 2c8b "
        "2c8d 2c8f 2c91 2c93 2c95 2c97 2c99 2c9b 2c9d 2c9f 2ca1 2ca3 2ca5 2ca7 2ca9 2cab 2cad "
        "2caf 2cb1 2cb3 2cb5 2cb7 2cb9 2cbb 2cbd 2cbf 2cc1 2cc3 2cc5 2cc7 2cc9 2ccb 2ccd 2ccf "
        "2cd1 2cd3 2cd5 2cd7 2cd9 2cdb 2cdd 2cdf 2ce1 2ce3-2ce4 2cec 2cee 2cf3 2d00-2d25 2d27 "
        "2d2d a641 a643 a645 a647 a649 a64b a64d a64f a651 a653 a655 a657 a659 a65b a65d a65f "
        "a661 a663 a665 a667 a669 a66b a66d a681 a683 a685 a687 a689 a68b a68d a68f a691 a693 "
        "a695 a697 a699 a69b a723 a725 a727 a729 a72b a72d a72f-a731 a733 a735 a737 a739 a73b "
        "a73d a73f a741 a743 a745 a747 a749 a74b a74d a74f a751 a753 a755 a757 a759 a75b a75d "
        "a75f a761 a763 a765 a767 a769 a76b a76d a76f a771-a778 a77a a77c a77f a781 a783 a785 "
        "a787 a78c a78e a791 a793-a795 a797 a799 a79b a79d a79f a7a1 a7a3 a7a5 a7a7 a7a9 a7af "
        "a7b5 a7b7 a7b9 a7bb a7bd a7bf a7c1 a7c3 a7c8 a7ca a7cd a7d1 a7d3 a7d5 a7d7 a7d9 a7db "
        "a7f6 a7fa ab30-ab5a ab60-ab68 ab70-abbf fb00-fb06 fb13-fb17 ff41-ff5a 10428-1044f "
        "104d8-104fb 10597-105a1 105a3-105b1 105b3-105b9 105bb-105bc 10cc0-10cf2 10d70-10d85 "
        "118c0-118df 16e60-16e7f 1d41a-1d433 1d44e-1d454 1d456-1d467 1d482-1d49b 1d4b6-1d4b9 "
        "1d4bb 1d4bd-1d4c3 1d4c5-1d4cf 1d4ea-1d503 1d51e-1d537 1d552-1d56b 1d586-1d59f "
        "1d5ba-1d5d3 1d5ee-1d607 1d622-1d63b 1d656-1d66f 1d68a-1d6a5 1d6c2-1d6da 1d6dc-1d6e1 "
        "1d6fc-1d714 1d716-1d71b 1d736-1d74e 1d750-1d755 1d770-1d788 1d78a-1d78f 1d7aa-1d7c2 "
        "1d7c4-1d7c9 1d7cb 1df00-1df09 1df0b-1df1e 1df25-1df2a 1e922-1e943 "
    ),
    "Lt": (
        "1c5 1c8 1cb 1f2 1f88-1f8f 1f98-1f9f 1fa8-1faf 1fbc 1fcc 1ffc "
    ),
    "Lm": (
        "2b0-2c1 2c6-2d1 2e0-2e4 2ec 2ee 374 37a 559 640 6e5-6e6 7f4-7f5 7fa 81a 824 828 8c9 971 "
        "e46 ec6 10fc 17d7 1843 1aa7 1c78-1c7d 1d2c-1d6a 1d78 1d9b-1dbf 2071 207f 2090-209c "
        "2c7c-2c7d 2d6f 2e2f 3005 3031-3035 303b 309d-309e 30fc-30fe a015 a4f8-a4fd a60c a67f "
        "a69c-a69d a717-a71f a770 a788 a7f2-a7f4 a7f8-a7f9 a9cf a9e6 aa70 aadd aaf3-aaf4 "
        "ab5c-ab5f ab69 ff70 ff9e-ff9f 10780-10785 10787-107b0 107b2-107ba 10d4e 10d6f "
        "16b40-16b43 16d40-16d42 16d6b-16d6c 16f93-16f9f 16fe0-16fe1 16fe3 1aff0-1aff3 "
        "1aff5-1affb 1affd-1affe 1e030-1e06d 1e137-1e13d 1e4eb 1e94b "
    ),
    "Lo": (
        "aa ba 1bb 1c0-1c3 294 5d0-5ea 5ef-5f2 620-63f 641-64a 66e-66f 671-6d3 6d5 6ee-6ef "
        "6fa-6fc 6ff 710 712-72f 74d-7a5 7b1 7ca-7ea 800-815 840-858 860-86a 870-887 889-88e "
        "8a0-8c8 904-939 93d 950 958-961 972-980 985-98c 98f-990 993-9a8 9aa-9b0 9b2 9b6-9b9 9bd "
        "9ce 9dc-9dd 9df-9e1 9f0-9f1 9fc a05-a0a a0f-a10 a13-a28 a2a-a30 a32-a33 a35-a36 a38-a39 "
        "a59-a5c a5e a72-a74 a85-a8d a8f-a91 a93-aa8 aaa-ab0 ab2-ab3 ab5-ab9 abd ad0 ae0-ae1 af9 "
        "b05-b0c b0f-b10 b13-b28 b2a-b30 b32-b33 b35-b39 b3d b5c-b5d b5f-b61 b71 b83 b85-b8a "
        "b8e-b90 b92-b95 b99-b9a b9c b9e-b9f ba3-ba4 ba8-baa bae-bb9 bd0 c05-c0c c0e-c10 c12-c28 "
        "c2a-c39 c3d c58-c5a c5d c60-c61 c80 c85-c8c c8e-c90 c92-ca8 caa-cb3 cb5-cb9 cbd cdd-cde "
        "ce0-ce1 cf1-cf2 d04-d0c d0e-d10 d12-d3a d3d d4e d54-d56 d5f-d61 d7a-d7f d85-d96 d9a-db1 "
        "db3-dbb dbd dc0-dc6 e01-e30 e32-e33 e40-e45 e81-e82 e84 e86-e8a e8c-ea3 ea5 ea7-eb0 "
        "eb2-eb3 ebd ec0-ec4 edc-edf f00 f40-f47 f49-f6c f88-f8c 1000-102a 103f 1050-1055 "
        "105a-105d 1061 1065-1066 106e-1070 1075-1081 108e 1100-1248 124a-124d 1250-1256 1258 "
        "125a-125d 1260-1288 128a-128d 1290-12b0 12b2-12b5 12b8-12be 12c0 12c2-12c5 12c8-12d6 "
        "12d8-1310 1312-1315 1318-135a 1380-138f 1401-166c 166f-167f 1681-169a 16a0-16ea "
        "16f1-16f8 1700-1711 171f-1731 1740-1751 1760-176c 176e-1770 1780-17b3 17dc 1820-1842 "
        "1844-1878 1880-1884 1887-18a8 18aa 18b0-18f5 1900-191e 1950-196d 1970-1974 1980-19ab "
        "19b0-19c9 1a00-1a16 1a20-1a54 1b05-1b33 1b45-1b4c 1b83-1ba0 1bae-1baf 1bba-1be5 "
        "1c00-1c23 1c4d-1c4f 1c5a-1c77 1ce9-1cec 1cee-1cf3 1cf5-1cf6 1cfa 2135-2138 2d30-2d67 "
        "2d80-2d96 2da0-2da6 2da8-2dae 2db0-2db6 2db8-2dbe 2dc0-2dc6 2dc8-2dce 2dd0-2dd6 "
        "2dd8-2dde 3006 303c 3041-3096 309f 30a1-30fa 30ff 3105-312f 3131-318e 31a0-31bf "
        "31f0-31ff 3400-4dbf 4e00-a014 a016-a48c a4d0-a4f7 a500-a60b a610-a61f a62a-a62b a66e "
        "a6a0-a6e5 a78f a7f7 a7fb-a801 a803-a805 a807-a80a a80c-a822 a840-a873 a882-a8b3 "
        "a8f2-a8f7 a8fb a8fd-a8fe a90a-a925 a930-a946 a960-a97c a984-a9b2 a9e0-a9e4 a9e7-a9ef "
        "a9fa-a9fe aa00-aa28 aa40-aa42 aa44-aa4b aa60-aa6f aa71-aa76 aa7a aa7e-aaaf aab1 "
        "aab5-aab6 aab9-aabd aac0 aac2 aadb-aadc aae0-aaea aaf2 ab01-ab06 ab09-ab0e ab11-ab16 "
        "ab20-ab26 ab28-ab2e abc0-abe2 ac00-d7a3 d7b0-d7c6 d7cb-d7fb f900-fa6d fa70-fad9 fb1d "
        "fb1f-fb28 fb2a-fb36 fb38-fb3c fb3e fb40-fb41 fb43-fb44 fb46-fbb1 fbd3-fd3d fd50-fd8f "
        "fd92-fdc7 fdf0-fdfb fe70-fe74 fe76-fefc ff66-ff6f ff71-ff9d ffa0-ffbe ffc2-ffc7 "
        "ffca-ffcf ffd2-ffd7 ffda-ffdc 10000-1000b 1000d-10026 10028-1003a 1003c-1003d "
        "1003f-1004d 10050-1005d 10080-100fa 10280-1029c 102a0-102d0 10300-1031f 1032d-10340 "
        "10342-10349 10350-10375 10380-1039d 103a0-103c3 103c8-103cf 10450-1049d 10500-10527 "
        "10530-10563 105c0-105f3 10600-10736 10740-10755 10760-10767 10800-10805 10808 "
        "1080a-10835 10837-10838 1083c 1083f-10855 10860-10876 10880-1089e 108e0-108f2 "
        "108f4-108f5 10900-10915 10920-10939 10980-109b7 109be-109bf 10a00 10a10-10a13 "
        "10a15-10a17 10a19-10a35 10a60-10a7c 10a80-10a9c 10ac0-10ac7 10ac9-10ae4 10b00-10b35 "
        "10b40-10b55 10b60-10b72 10b80-10b91 10c00-10c48 10d00-10d23 10d4a-10d4d 10d4f "
        "10e80-10ea9 10eb0-10eb1 10ec2-10ec4 10f00-10f1c 10f27 10f30-10f45 10f70-10f81 "
        "10fb0-10fc4 10fe0-10ff6 11003-11037 11071-11072 11075 11083-110af 110d0-110e8 "
        "11103-11126 11144 11147 11150-11172 11176 11183-111b2 111c1-111c4 111da 111dc "
        "11200-11211 11213-1122b 1123f-11240 11280-11286 11288 1128a-1128d 1128f-1129d "
        "1129f-112a8 112b0-112de 11305-1130c 1130f-11310 11313-11328 1132a-11330 11332-11333 "
        "11335-11339 1133d 11350 1135d-11361 11380-11389 1138b 1138e 11390-113b5 113b7 113d1 "
        "113d3 11400-11434 11447-1144a 1145f-11461 11480-114af 114c4-114c5 114c7 11580-115ae "
        "115d8-115db 11600-1162f 11644 11680-116aa 116b8 11700-1171a 11740-11746 11800-1182b "
        "118ff-11906 11909 1190c-11913 11915-11916 11918-1192f 1193f 11941 119a0-119a7 "
        "119aa-119d0 119e1 119e3 11a00 11a0b-11a32 11a3a 11a50 11a5c-11a89 11a9d 11ab0-11af8 "
        "11bc0-11be0 11c00-11c08 11c0a-11c2e 11c40 11c72-11c8f 11d00-11d06 11d08-11d09 "
        "11d0b-11d30 11d46 11d60-11d65 11d67-11d68 11d6a-11d89 11d98 11ee0-11ef2 11f02 "
        "11f04-11f10 11f12-11f33 11fb0 12000-12399 12480-12543 12f90-12ff0 13000-1342f "
        "13441-13446 13460-143fa 14400-14646 16100-1611d 16800-16a38 16a40-16a5e 16a70-16abe "
        "16ad0-16aed 16b00-16b2f 16b63-16b77 16b7d-16b8f 16d43-16d6a 16f00-16f4a 16f50 "
        "17000-187f7 18800-18cd5 18cff-18d08 1b000-1b122 1b132 1b150-1b152 1b155 1b164-1b167 "
        "1b170-1b2fb 1bc00-1bc6a 1bc70-1bc7c 1bc80-1bc88 1bc90-1bc99 1df0a 1e100-1e12c 1e14e "
        "1e290-1e2ad 1e2c0-1e2eb 1e4d0-1e4ea 1e5d0-1e5ed 1e5f0 1e7e0-1e7e6 1e7e8-1e7eb "
        "1e7ed-1e7ee 1e7f0-1e7fe 1e800-1e8c4 1ee00-1ee03 1ee05-1ee1f 1ee21-1ee22 1ee24 1ee27 "
        "1ee29-1ee32 1ee34-1ee37 1ee39 1ee3b 1ee42 1ee47 1ee49 1ee4b 1ee4d-1ee4f 1ee51-1ee52 "
        "1ee54 1ee57 1ee59 1ee5b 1ee5d 1ee5f 1ee61-1ee62 1ee64 1ee67-1ee6a 1ee6c-1ee72 "
        "1ee74-1ee77 1ee79-1ee7c 1ee7e 1ee80-1ee89 1ee8b-1ee9b 1eea1-1eea3 1eea5-1eea9 "
        "1eeab-1eebb 20000-2a6df 2a700-2b739 2b740-2b81d 2b820-2cea1 2ceb0-2ebe0 2ebf0-2ee5d "
        "2f800-2fa1d 30000-3134a 31350-323af "
    ),
    "M": (
        "300-36f 483-489 591-5bd 5bf 5c1-5c2 5c4-5c5 5c7 610-61a 64b-65f 670 6d6-6dc 6df-6e4 "
        "6e7-6e8 6ea-6ed 711 730-74a 7a6-7b0 7eb-7f3 7fd 816-819 81b-823 825-827 829-82d 859-85b "
        "897-89f 8ca-8e1 8e3-903 93a-93c 93e-94f 951-957 962-963 981-983 9bc 9be-9c4 9c7-9c8 "
        "9cb-9cd 9d7 9e2-9e3 9fe a01-a03 a3c a3e-a42 a47-a48 a4b-a4d a51 a70-a71 a75 a81-a83 abc "
        "abe-ac5 ac7-ac9 acb-acd ae2-ae3 afa-aff b01-b03 b3c b3e-b44 b47-b48 b4b-b4d b55-b57 "
        "b62-b63 b82 bbe-bc2 bc6-bc8 bca-bcd bd7 c00-c04 c3c c3e-c44 c46-c48 c4a-c4d c55-c56 "
        "c62-c63 c81-c83 cbc cbe-cc4 cc6-cc8 cca-ccd cd5-cd6 ce2-ce3 cf3 d00-d03 d3b-d3c d3e-d44 "
        "d46-d48 d4a-d4d d57 d62-d63 d81-d83 dca dcf-dd4 dd6 dd8-ddf df2-df3 e31 e34-e3a e47-e4e "
        "eb1 eb4-ebc ec8-ece f18-f19 f35 f37 f39 f3e-f3f f71-f84 f86-f87 f8d-f97 f99-fbc fc6 "
        "102b-103e 1056-1059 105e-1060 1062-1064 1067-106d 1071-1074 1082-108d 108f 109a-109d "
        "135d-135f 1712-1715 1732-1734 1752-1753 1772-1773 17b4-17d3 17dd 180b-180d 180f "
        "1885-1886 18a9 1920-192b 1930-193b 1a17-1a1b 1a55-1a5e 1a60-1a7c 1a7f 1ab0-1ace "
        "1b00-1b04 1b34-1b44 1b6b-1b73 1b80-1b82 1ba1-1bad 1be6-1bf3 1c24-1c37 1cd0-1cd2 "
        "1cd4-1ce8 1ced 1cf4 1cf7-1cf9 1dc0-1dff 20d0-20f0 2cef-2cf1 2d7f 2de0-2dff 302a-302f "
        "3099-309a a66f-a672 a674-a67d a69e-a69f a6f0-a6f1 a802 a806 a80b a823-a827 a82c "
        "a880-a881 a8b4-a8c5 a8e0-a8f1 a8ff a926-a92d a947-a953 a980-a983 a9b3-a9c0 a9e5 "
        "aa29-aa36 aa43 aa4c-aa4d aa7b-aa7d aab0 aab2-aab4 aab7-aab8 aabe-aabf aac1 aaeb-aaef "
        "aaf5-aaf6 abe3-abea abec-abed fb1e fe00-fe0f fe20-fe2f 101fd 102e0 10376-1037a "
        "10a01-10a03 10a05-10a06 10a0c-10a0f 10a38-10a3a 10a3f 10ae5-10ae6 10d24-10d27 "
        "10d69-10d6d 10eab-10eac 10efc-10eff 10f46-10f50 10f82-10f85 11000-11002 11038-11046 "
        "11070 11073-11074 1107f-11082 110b0-110ba 110c2 11100-11102 11127-11134 11145-11146 "
        "11173 11180-11182 111b3-111c0 111c9-111cc 111ce-111cf 1122c-11237 1123e 11241 "
        "112df-112ea 11300-11303 1133b-1133c 1133e-11344 11347-11348 1134b-1134d 11357 "
        "11362-11363 11366-1136c 11370-11374 113b8-113c0 113c2 113c5 113c7-113ca 113cc-113d0 "
        "113d2 113e1-113e2 11435-11446 1145e 114b0-114c3 115af-115b5 115b8-115c0 115dc-115dd "
        "11630-11640 116ab-116b7 1171d-1172b 1182c-1183a 11930-11935 11937-11938 1193b-1193e "
        "11940 11942-11943 119d1-119d7 119da-119e0 119e4 11a01-11a0a 11a33-11a39 11a3b-11a3e "
        "11a47 11a51-11a5b 11a8a-11a99 11c2f-11c36 11c38-11c3f 11c92-11ca7 11ca9-11cb6 "
        "11d31-11d36 11d3a 11d3c-11d3d 11d3f-11d45 11d47 11d8a-11d8e 11d90-11d91 11d93-11d97 "
        "11ef3-11ef6 11f00-11f01 11f03 11f34-11f3a 11f3e-11f42 11f5a 13440 13447-13455 "
        "1611e-1612f 16af0-16af4 16b30-16b36 16f4f 16f51-16f87 16f8f-16f92 16fe4 16ff0-16ff1 "
        "1bc9d-1bc9e 1cf00-1cf2d 1cf30-1cf46 1d165-1d169 1d16d-1d172 1d17b-1d182 1d185-1d18b "
        "1d1aa-1d1ad 1d242-1d244 1da00-1da36 1da3b-1da6c 1da75 1da84 1da9b-1da9f 1daa1-1daaf "
        "1e000-1e006 1e008-1e018 1e01b-1e021 1e023-1e024 1e026-1e02a 1e08f 1e130-1e136 1e2ae "
        "1e2ec-1e2ef 1e4ec-1e4ef 1e5ee-1e5ef 1e8d0-1e8d6 1e944-1e94a e0100-e01ef "
    ),
    "N": (
        "30-39 b2-b3 b9 bc-be 660-669 6f0-6f9 7c0-7c9 966-96f 9e6-9ef 9f4-9f9 a66-a6f ae6-aef "
        "b66-b6f b72-b77 be6-bf2 c66-c6f c78-c7e ce6-cef d58-d5e d66-d78 de6-def e50-e59 ed0-ed9 "
        "f20-f33 1040-1049 1090-1099 1369-137c 16ee-16f0 17e0-17e9 17f0-17f9 1810-1819 1946-194f "
        "19d0-19da 1a80-1a89 1a90-1a99 1b50-1b59 1bb0-1bb9 1c40-1c49 1c50-1c59 2070 2074-2079 "
        "2080-2089 2150-2182 2185-2189 2460-249b 24ea-24ff 2776-2793 2cfd 3007 3021-3029 "
        "3038-303a 3192-3195 3220-3229 3248-324f 3251-325f 3280-3289 32b1-32bf a620-a629 "
        "a6e6-a6ef a830-a835 a8d0-a8d9 a900-a909 a9d0-a9d9 a9f0-a9f9 aa50-aa59 abf0-abf9 "
        "ff10-ff19 10107-10133 10140-10178 1018a-1018b 102e1-102fb 10320-10323 10341 1034a "
        "103d1-103d5 104a0-104a9 10858-1085f 10879-1087f 108a7-108af 108fb-108ff 10916-1091b "
        "109bc-109bd 109c0-109cf 109d2-109ff 10a40-10a48 10a7d-10a7e 10a9d-10a9f 10aeb-10aef "
        "10b58-10b5f 10b78-10b7f 10ba9-10baf 10cfa-10cff 10d30-10d39 10d40-10d49 10e60-10e7e "
        "10f1d-10f26 10f51-10f54 10fc5-10fcb 11052-1106f 110f0-110f9 11136-1113f 111d0-111d9 "
        "111e1-111f4 112f0-112f9 11450-11459 114d0-114d9 11650-11659 116c0-116c9 116d0-116e3 "
        "11730-1173b 118e0-118f2 11950-11959 11bf0-11bf9 11c50-11c6c 11d50-11d59 11da0-11da9 "
        "11f50-11f59 11fc0-11fd4 12400-1246e 16130-16139 16a60-16a69 16ac0-16ac9 16b50-16b59 "
        "16b5b-16b61 16d70-16d79 16e80-16e96 1ccf0-1ccf9 1d2c0-1d2d3 1d2e0-1d2f3 1d360-1d378 "
        "1d7ce-1d7ff 1e140-1e149 1e2f0-1e2f9 1e4f0-1e4f9 1e5f1-1e5fa 1e8c7-1e8cf 1e950-1e959 "
        "1ec71-1ecab 1ecad-1ecaf 1ecb1-1ecb4 1ed01-1ed2d 1ed2f-1ed3d 1f100-1f10c 1fbf0-1fbf9 "
    ),
    "P": (
        "21-23 25-2a 2c-2f 3a-3b 3f-40 5b-5d 5f 7b 7d a1 a7 ab b6-b7 bb bf 37e 387 55a-55f "
        "589-58a 5be 5c0 5c3 5c6 5f3-5f4 609-60a 60c-60d 61b 61d-61f 66a-66d 6d4 700-70d 7f7-7f9 "
        "830-83e 85e 964-965 970 9fd a76 af0 c77 c84 df4 e4f e5a-e5b f04-f12 f14 f3a-f3d f85 "
        "fd0-fd4 fd9-fda 104a-104f 10fb 1360-1368 1400 166e 169b-169c 16eb-16ed 1735-1736 "
        "17d4-17d6 17d8-17da 1800-180a 1944-1945 1a1e-1a1f 1aa0-1aa6 1aa8-1aad 1b4e-1b4f "
        "1b5a-1b60 1b7d-1b7f 1bfc-1bff 1c3b-1c3f 1c7e-1c7f 1cc0-1cc7 1cd3 2010-2027 2030-2043 "
        "2045-2051 2053-205e 207d-207e 208d-208e 2308-230b 2329-232a 2768-2775 27c5-27c6 "
        "27e6-27ef 2983-2998 29d8-29db 29fc-29fd 2cf9-2cfc 2cfe-2cff 2d70 2e00-2e2e 2e30-2e4f "
        "2e52-2e5d 3001-3003 3008-3011 3014-301f 3030 303d 30a0 30fb a4fe-a4ff a60d-a60f a673 "
        "a67e a6f2-a6f7 a874-a877 a8ce-a8cf a8f8-a8fa a8fc a92e-a92f a95f a9c1-a9cd a9de-a9df "
        "aa5c-aa5f aade-aadf aaf0-aaf1 abeb fd3e-fd3f fe10-fe19 fe30-fe52 fe54-fe61 fe63 fe68 "
        "fe6a-fe6b ff01-ff03 ff05-ff0a ff0c-ff0f ff1a-ff1b ff1f-ff20 ff3b-ff3d ff3f ff5b ff5d "
        "ff5f-ff65 10100-10102 1039f 103d0 1056f 10857 1091f 1093f 10a50-10a58 10a7f 10af0-10af6 "
        "10b39-10b3f 10b99-10b9c 10d6e 10ead 10f55-10f59 10f86-10f89 11047-1104d 110bb-110bc "
        "110be-110c1 11140-11143 11174-11175 111c5-111c8 111cd 111db 111dd-111df 11238-1123d "
        "112a9 113d4-113d5 113d7-113d8 1144b-1144f 1145a-1145b 1145d 114c6 115c1-115d7 "
        "11641-11643 11660-1166c 116b9 1173c-1173e 1183b 11944-11946 119e2 11a3f-11a46 "
        "11a9a-11a9c 11a9e-11aa2 11b00-11b09 11be1 11c41-11c45 11c70-11c71 11ef7-11ef8 "
        "11f43-11f4f 11fff 12470-12474 12ff1-12ff2 16a6e-16a6f 16af5 16b37-16b3b 16b44 "
        "16d6d-16d6f 16e97-16e9a 16fe2 1bc9f 1da87-1da8b 1e5ff 1e95e-1e95f "
    ),
    "S": (
        "24 2b 3c-3e 5e 60 7c 7e a2-a6 a8-a9 ac ae-b1 b4 b8 d7 f7 2c2-2c5 2d2-2df 2e5-2eb 2ed "
        "2ef-2ff 375 384-385 3f6 482 58d-58f 606-608 60b 60e-60f 6de 6e9 6fd-6fe 7f6 7fe-7ff 888 "
        "9f2-9f3 9fa-9fb af1 b70 bf3-bfa c7f d4f d79 e3f f01-f03 f13 f15-f17 f1a-f1f f34 f36 f38 "
        "fbe-fc5 fc7-fcc fce-fcf fd5-fd8 109e-109f 1390-1399 166d 17db 1940 19de-19ff 1b61-1b6a "
        "1b74-1b7c 1fbd 1fbf-1fc1 1fcd-1fcf 1fdd-1fdf 1fed-1fef 1ffd-1ffe 2044 2052 207a-207c "
        "208a-208c 20a0-20c0 2100-2101 2103-2106 2108-2109 2114 2116-2118 211e-2123 2125 2127 "
        "2129 212e 213a-213b 2140-2144 214a-214d 214f 218a-218b 2190-2307 230c-2328 232b-2429 "
        "2440-244a 249c-24e9 2500-2767 2794-27c4 27c7-27e5 27f0-2982 2999-29d7 29dc-29fb "
        "29fe-2b73 2b76-2b95 2b97-2bff 2ce5-2cea 2e50-2e51 2e80-2e99 2e9b-2ef3 2f00-2fd5 "
        "2ff0-2fff 3004 3012-3013 3020 3036-3037 303e-303f 309b-309c 3190-3191 3196-319f "
        "31c0-31e5 31ef 3200-321e 322a-3247 3250 3260-327f 328a-32b0 32c0-33ff 4dc0-4dff "
        "a490-a4c6 a700-a716 a720-a721 a789-a78a a828-a82b a836-a839 aa77-aa79 ab5b ab6a-ab6b "
        "fb29 fbb2-fbc2 fd40-fd4f fdcf fdfc-fdff fe62 fe64-fe66 fe69 ff04 ff0b ff1c-ff1e ff3e "
        "ff40 ff5c ff5e ffe0-ffe6 ffe8-ffee fffc-fffd 10137-1013f 10179-10189 1018c-1018e "
        "10190-1019c 101a0 101d0-101fc 10877-10878 10ac8 10d8e-10d8f 1173f 11fd5-11ff1 "
        "16b3c-16b3f 16b45 1bc9c 1cc00-1ccef 1cd00-1ceb3 1cf50-1cfc3 1d000-1d0f5 1d100-1d126 "
        "1d129-1d164 1d16a-1d16c 1d183-1d184 1d18c-1d1a9 1d1ae-1d1ea 1d200-1d241 1d245 "
        "1d300-1d356 1d6c1 1d6db 1d6fb 1d715 1d735 1d74f 1d76f 1d789 1d7a9 1d7c3 1d800-1d9ff "
        "1da37-1da3a 1da6d-1da74 1da76-1da83 1da85-1da86 1e14f 1e2ff 1ecac 1ecb0 1ed2e "
        "1eef0-1eef1 1f000-1f02b 1f030-1f093 1f0a0-1f0ae 1f0b1-1f0bf 1f0c1-1f0cf 1f0d1-1f0f5 "
        "1f10d-1f1ad 1f1e6-1f202 1f210-1f23b 1f240-1f248 1f250-1f251 1f260-1f265 1f300-1f6d7 "
        "1f6dc-1f6ec 1f6f0-1f6fc 1f700-1f776 1f77b-1f7d9 1f7e0-1f7eb 1f7f0 1f800-1f80b "
        "1f810-1f847 1f850-1f859 1f860-1f887 1f890-1f8ad 1f8b0-1f8bb 1f8c0-1f8c1 1f900-1fa53 "
        "1fa60-1fa6d 1fa70-1fa7c 1fa80-1fa89 1fa8f-1fac6 1face-1fadc 1fadf-1fae9 1faf0-1faf8 "
        "1fb00-1fb92 1fb94-1fbef "
    ),
}
# \p{L} is the union of its parts, as the library's tables have it
PARTS = {"L": ("Lu", "Ll", "Lt", "Lm", "Lo")}
# The Digits pre-tokenizer's numbers: Rust's char::is_numeric (the N categories), whose Unicode
# is newer than Oniguruma's \p{N}: these Unicode 17 digits are numeric there too.
NUMERIC_BEYOND_N = "11de0-11de9 16ff4-16ff6 "

# The Whitespace pre-tokenizer's \w: its regex (\w+|[^\w\s]+) is the Rust regex crate's, not
# Oniguruma's: Alphabetic, marks, decimal digits, connector punctuation and joiners, so U+00B2
# (a superscript, No) is not a word character there as it is in \p{N}. Its \s is bpe.py's.
# Read from the pre-tokenizer itself (whitespace_word_from_library).
WHITESPACE_WORD = (
    "30-39 41-5a 5f 61-7a aa b5 ba c0-d6 d8-f6 f8-2c1 2c6-2d1 2e0-2e4 2ec 2ee 300-374 "
    "376-377 37a-37d 37f 386 388-38a 38c 38e-3a1 3a3-3f5 3f7-481 483-52f 531-556 559 560-588 "
    "591-5bd 5bf 5c1-5c2 5c4-5c5 5c7 5d0-5ea 5ef-5f2 610-61a 620-669 66e-6d3 6d5-6dc 6df-6e8 "
    "6ea-6fc 6ff 710-74a 74d-7b1 7c0-7f5 7fa 7fd 800-82d 840-85b 860-86a 870-887 889-88e "
    "897-8e1 8e3-963 966-96f 971-983 985-98c 98f-990 993-9a8 9aa-9b0 9b2 9b6-9b9 9bc-9c4 "
    "9c7-9c8 9cb-9ce 9d7 9dc-9dd 9df-9e3 9e6-9f1 9fc 9fe a01-a03 a05-a0a a0f-a10 a13-a28 "
    "a2a-a30 a32-a33 a35-a36 a38-a39 a3c a3e-a42 a47-a48 a4b-a4d a51 a59-a5c a5e a66-a75 "
    "a81-a83 a85-a8d a8f-a91 a93-aa8 aaa-ab0 ab2-ab3 ab5-ab9 abc-ac5 ac7-ac9 acb-acd ad0 "
    "ae0-ae3 ae6-aef af9-aff b01-b03 b05-b0c b0f-b10 b13-b28 b2a-b30 b32-b33 b35-b39 b3c-b44 "
    "b47-b48 b4b-b4d b55-b57 b5c-b5d b5f-b63 b66-b6f b71 b82-b83 b85-b8a b8e-b90 b92-b95 "
    "b99-b9a b9c b9e-b9f ba3-ba4 ba8-baa bae-bb9 bbe-bc2 bc6-bc8 bca-bcd bd0 bd7 be6-bef "
    "c00-c0c c0e-c10 c12-c28 c2a-c39 c3c-c44 c46-c48 c4a-c4d c55-c56 c58-c5a c5d c60-c63 "
    "c66-c6f c80-c83 c85-c8c c8e-c90 c92-ca8 caa-cb3 cb5-cb9 cbc-cc4 cc6-cc8 cca-ccd cd5-cd6 "
    "cdd-cde ce0-ce3 ce6-cef cf1-cf3 d00-d0c d0e-d10 d12-d44 d46-d48 d4a-d4e d54-d57 d5f-d63 "
    "d66-d6f d7a-d7f d81-d83 d85-d96 d9a-db1 db3-dbb dbd dc0-dc6 dca dcf-dd4 dd6 dd8-ddf "
    "de6-def df2-df3 e01-e3a e40-e4e e50-e59 e81-e82 e84 e86-e8a e8c-ea3 ea5 ea7-ebd ec0-ec4 "
    "ec6 ec8-ece ed0-ed9 edc-edf f00 f18-f19 f20-f29 f35 f37 f39 f3e-f47 f49-f6c f71-f84 "
    "f86-f97 f99-fbc fc6 1000-1049 1050-109d 10a0-10c5 10c7 10cd 10d0-10fa 10fc-1248 "
    "124a-124d 1250-1256 1258 125a-125d 1260-1288 128a-128d 1290-12b0 12b2-12b5 12b8-12be "
    "12c0 12c2-12c5 12c8-12d6 12d8-1310 1312-1315 1318-135a 135d-135f 1380-138f 13a0-13f5 "
    "13f8-13fd 1401-166c 166f-167f 1681-169a 16a0-16ea 16ee-16f8 1700-1715 171f-1734 "
    "1740-1753 1760-176c 176e-1770 1772-1773 1780-17d3 17d7 17dc-17dd 17e0-17e9 180b-180d "
    "180f-1819 1820-1878 1880-18aa 18b0-18f5 1900-191e 1920-192b 1930-193b 1946-196d "
    "1970-1974 1980-19ab 19b0-19c9 19d0-19d9 1a00-1a1b 1a20-1a5e 1a60-1a7c 1a7f-1a89 "
    "1a90-1a99 1aa7 1ab0-1ace 1b00-1b4c 1b50-1b59 1b6b-1b73 1b80-1bf3 1c00-1c37 1c40-1c49 "
    "1c4d-1c7d 1c80-1c8a 1c90-1cba 1cbd-1cbf 1cd0-1cd2 1cd4-1cfa 1d00-1f15 1f18-1f1d "
    "1f20-1f45 1f48-1f4d 1f50-1f57 1f59 1f5b 1f5d 1f5f-1f7d 1f80-1fb4 1fb6-1fbc 1fbe "
    "1fc2-1fc4 1fc6-1fcc 1fd0-1fd3 1fd6-1fdb 1fe0-1fec 1ff2-1ff4 1ff6-1ffc 200c-200d "
    "203f-2040 2054 2071 207f 2090-209c 20d0-20f0 2102 2107 210a-2113 2115 2119-211d 2124 "
    "2126 2128 212a-212d 212f-2139 213c-213f 2145-2149 214e 2160-2188 24b6-24e9 2c00-2ce4 "
    "2ceb-2cf3 2d00-2d25 2d27 2d2d 2d30-2d67 2d6f 2d7f-2d96 2da0-2da6 2da8-2dae 2db0-2db6 "
    "2db8-2dbe 2dc0-2dc6 2dc8-2dce 2dd0-2dd6 2dd8-2dde 2de0-2dff 2e2f 3005-3007 3021-302f "
    "3031-3035 3038-303c 3041-3096 3099-309a 309d-309f 30a1-30fa 30fc-30ff 3105-312f "
    "3131-318e 31a0-31bf 31f0-31ff 3400-4dbf 4e00-a48c a4d0-a4fd a500-a60c a610-a62b "
    "a640-a672 a674-a67d a67f-a6f1 a717-a71f a722-a788 a78b-a7cd a7d0-a7d1 a7d3 a7d5-a7dc "
    "a7f2-a827 a82c a840-a873 a880-a8c5 a8d0-a8d9 a8e0-a8f7 a8fb a8fd-a92d a930-a953 "
    "a960-a97c a980-a9c0 a9cf-a9d9 a9e0-a9fe aa00-aa36 aa40-aa4d aa50-aa59 aa60-aa76 "
    "aa7a-aac2 aadb-aadd aae0-aaef aaf2-aaf6 ab01-ab06 ab09-ab0e ab11-ab16 ab20-ab26 "
    "ab28-ab2e ab30-ab5a ab5c-ab69 ab70-abea abec-abed abf0-abf9 ac00-d7a3 d7b0-d7c6 "
    "d7cb-d7fb f900-fa6d fa70-fad9 fb00-fb06 fb13-fb17 fb1d-fb28 fb2a-fb36 fb38-fb3c fb3e "
    "fb40-fb41 fb43-fb44 fb46-fbb1 fbd3-fd3d fd50-fd8f fd92-fdc7 fdf0-fdfb fe00-fe0f "
    "fe20-fe2f fe33-fe34 fe4d-fe4f fe70-fe74 fe76-fefc ff10-ff19 ff21-ff3a ff3f ff41-ff5a "
    "ff66-ffbe ffc2-ffc7 ffca-ffcf ffd2-ffd7 ffda-ffdc 10000-1000b 1000d-10026 10028-1003a "
    "1003c-1003d 1003f-1004d 10050-1005d 10080-100fa 10140-10174 101fd 10280-1029c "
    "102a0-102d0 102e0 10300-1031f 1032d-1034a 10350-1037a 10380-1039d 103a0-103c3 "
    "103c8-103cf 103d1-103d5 10400-1049d 104a0-104a9 104b0-104d3 104d8-104fb 10500-10527 "
    "10530-10563 10570-1057a 1057c-1058a 1058c-10592 10594-10595 10597-105a1 105a3-105b1 "
    "105b3-105b9 105bb-105bc 105c0-105f3 10600-10736 10740-10755 10760-10767 10780-10785 "
    "10787-107b0 107b2-107ba 10800-10805 10808 1080a-10835 10837-10838 1083c 1083f-10855 "
    "10860-10876 10880-1089e 108e0-108f2 108f4-108f5 10900-10915 10920-10939 10980-109b7 "
    "109be-109bf 10a00-10a03 10a05-10a06 10a0c-10a13 10a15-10a17 10a19-10a35 10a38-10a3a "
    "10a3f 10a60-10a7c 10a80-10a9c 10ac0-10ac7 10ac9-10ae6 10b00-10b35 10b40-10b55 "
    "10b60-10b72 10b80-10b91 10c00-10c48 10c80-10cb2 10cc0-10cf2 10d00-10d27 10d30-10d39 "
    "10d40-10d65 10d69-10d6d 10d6f-10d85 10e80-10ea9 10eab-10eac 10eb0-10eb1 10ec2-10ec4 "
    "10efc-10f1c 10f27 10f30-10f50 10f70-10f85 10fb0-10fc4 10fe0-10ff6 11000-11046 "
    "11066-11075 1107f-110ba 110c2 110d0-110e8 110f0-110f9 11100-11134 11136-1113f "
    "11144-11147 11150-11173 11176 11180-111c4 111c9-111cc 111ce-111da 111dc 11200-11211 "
    "11213-11237 1123e-11241 11280-11286 11288 1128a-1128d 1128f-1129d 1129f-112a8 "
    "112b0-112ea 112f0-112f9 11300-11303 11305-1130c 1130f-11310 11313-11328 1132a-11330 "
    "11332-11333 11335-11339 1133b-11344 11347-11348 1134b-1134d 11350 11357 1135d-11363 "
    "11366-1136c 11370-11374 11380-11389 1138b 1138e 11390-113b5 113b7-113c0 113c2 113c5 "
    "113c7-113ca 113cc-113d3 113e1-113e2 11400-1144a 11450-11459 1145e-11461 11480-114c5 "
    "114c7 114d0-114d9 11580-115b5 115b8-115c0 115d8-115dd 11600-11640 11644 11650-11659 "
    "11680-116b8 116c0-116c9 116d0-116e3 11700-1171a 1171d-1172b 11730-11739 11740-11746 "
    "11800-1183a 118a0-118e9 118ff-11906 11909 1190c-11913 11915-11916 11918-11935 "
    "11937-11938 1193b-11943 11950-11959 119a0-119a7 119aa-119d7 119da-119e1 119e3-119e4 "
    "11a00-11a3e 11a47 11a50-11a99 11a9d 11ab0-11af8 11bc0-11be0 11bf0-11bf9 11c00-11c08 "
    "11c0a-11c36 11c38-11c40 11c50-11c59 11c72-11c8f 11c92-11ca7 11ca9-11cb6 11d00-11d06 "
    "11d08-11d09 11d0b-11d36 11d3a 11d3c-11d3d 11d3f-11d47 11d50-11d59 11d60-11d65 "
    "11d67-11d68 11d6a-11d8e 11d90-11d91 11d93-11d98 11da0-11da9 11ee0-11ef6 11f00-11f10 "
    "11f12-11f3a 11f3e-11f42 11f50-11f5a 11fb0 12000-12399 12400-1246e 12480-12543 "
    "12f90-12ff0 13000-1342f 13440-13455 13460-143fa 14400-14646 16100-16139 16800-16a38 "
    "16a40-16a5e 16a60-16a69 16a70-16abe 16ac0-16ac9 16ad0-16aed 16af0-16af4 16b00-16b36 "
    "16b40-16b43 16b50-16b59 16b63-16b77 16b7d-16b8f 16d40-16d6c 16d70-16d79 16e40-16e7f "
    "16f00-16f4a 16f4f-16f87 16f8f-16f9f 16fe0-16fe1 16fe3-16fe4 16ff0-16ff1 17000-187f7 "
    "18800-18cd5 18cff-18d08 1aff0-1aff3 1aff5-1affb 1affd-1affe 1b000-1b122 1b132 "
    "1b150-1b152 1b155 1b164-1b167 1b170-1b2fb 1bc00-1bc6a 1bc70-1bc7c 1bc80-1bc88 "
    "1bc90-1bc99 1bc9d-1bc9e 1ccf0-1ccf9 1cf00-1cf2d 1cf30-1cf46 1d165-1d169 1d16d-1d172 "
    "1d17b-1d182 1d185-1d18b 1d1aa-1d1ad 1d242-1d244 1d400-1d454 1d456-1d49c 1d49e-1d49f "
    "1d4a2 1d4a5-1d4a6 1d4a9-1d4ac 1d4ae-1d4b9 1d4bb 1d4bd-1d4c3 1d4c5-1d505 1d507-1d50a "
    "1d50d-1d514 1d516-1d51c 1d51e-1d539 1d53b-1d53e 1d540-1d544 1d546 1d54a-1d550 "
    "1d552-1d6a5 1d6a8-1d6c0 1d6c2-1d6da 1d6dc-1d6fa 1d6fc-1d714 1d716-1d734 1d736-1d74e "
    "1d750-1d76e 1d770-1d788 1d78a-1d7a8 1d7aa-1d7c2 1d7c4-1d7cb 1d7ce-1d7ff 1da00-1da36 "
    "1da3b-1da6c 1da75 1da84 1da9b-1da9f 1daa1-1daaf 1df00-1df1e 1df25-1df2a 1e000-1e006 "
    "1e008-1e018 1e01b-1e021 1e023-1e024 1e026-1e02a 1e030-1e06d 1e08f 1e100-1e12c "
    "1e130-1e13d 1e140-1e149 1e14e 1e290-1e2ae 1e2c0-1e2f9 1e4d0-1e4f9 1e5d0-1e5fa "
    "1e7e0-1e7e6 1e7e8-1e7eb 1e7ed-1e7ee 1e7f0-1e7fe 1e800-1e8c4 1e8d0-1e8d6 1e900-1e94b "
    "1e950-1e959 1ee00-1ee03 1ee05-1ee1f 1ee21-1ee22 1ee24 1ee27 1ee29-1ee32 1ee34-1ee37 "
    "1ee39 1ee3b 1ee42 1ee47 1ee49 1ee4b 1ee4d-1ee4f 1ee51-1ee52 1ee54 1ee57 1ee59 1ee5b "
    "1ee5d 1ee5f 1ee61-1ee62 1ee64 1ee67-1ee6a 1ee6c-1ee72 1ee74-1ee77 1ee79-1ee7c 1ee7e "
    "1ee80-1ee89 1ee8b-1ee9b 1eea1-1eea3 1eea5-1eea9 1eeab-1eebb 1f130-1f149 1f150-1f169 "
    "1f170-1f189 1fbf0-1fbf9 20000-2a6df 2a700-2b739 2b740-2b81d 2b820-2cea1 2ceb0-2ebe0 "
    "2ebf0-2ee5d 2f800-2fa1d 30000-3134a 31350-323af e0100-e01ef "
)

# The UnicodeScripts pre-tokenizer's scripts: its own table (SentencePiece's, in which Hiragana,
# Katakana and U+30FC count as Han), as "first-last/script" ranges, the scripts numbered in the
# order their first code point comes. A code point in none is "Any" (so is the space): it never
# starts a piece. Read from the pre-tokenizer itself (unicode_scripts_from_library).
UNICODE_SCRIPTS = (
    "0-1f/0 21-40/0 41-5a/1 5b-60/0 61-7a/1 7b-a9/0 aa/1 ab-b9/0 ba/1 bb-bf/0 c0-d6/1 d7/0 "
    "d8-f6/1 f7/0 f8-2b8/1 2b9-2df/0 2e0-2e4/1 2e5-2e9/0 2ea-2eb/2 2ec-2ff/0 300-36f/3 "
    "370-373/4 374/0 375-377/4 37a-37d/4 37e/0 37f/4 384/4 385/0 386/4 387/0 388-38a/4 38c/4 "
    "38e-3a1/4 3a3-3e1/4 3e2-3ef/5 3f0-3ff/4 400-484/6 485-486/3 487-52f/6 531-556/7 "
    "559-55f/7 561-587/7 589/0 58a/7 58d-58f/7 591-5c7/8 5d0-5ea/8 5f0-5f4/8 600-604/9 605/0 "
    "606-60b/9 60c/0 60d-61a/9 61b-61c/0 61e/9 61f/0 620-63f/9 640/0 641-64a/9 64b-655/3 "
    "656-66f/9 670/3 671-6dc/9 6dd/0 6de-6ff/9 700-70d/10 70f-74a/10 74d-74f/10 750-77f/9 "
    "780-7b1/11 7c0-7fa/12 800-82d/13 830-83e/13 840-85b/14 85e/14 8a0-8b4/9 8b6-8bd/9 "
    "8d4-8e1/9 8e2/0 8e3-8ff/9 900-950/15 951-952/3 953-963/15 964-965/0 966-97f/15 "
    "980-983/16 985-98c/16 98f-990/16 993-9a8/16 9aa-9b0/16 9b2/16 9b6-9b9/16 9bc-9c4/16 "
    "9c7-9c8/16 9cb-9ce/16 9d7/16 9dc-9dd/16 9df-9e3/16 9e6-9fb/16 a01-a03/17 a05-a0a/17 "
    "a0f-a10/17 a13-a28/17 a2a-a30/17 a32-a33/17 a35-a36/17 a38-a39/17 a3c/17 a3e-a42/17 "
    "a47-a48/17 a4b-a4d/17 a51/17 a59-a5c/17 a5e/17 a66-a75/17 a81-a83/18 a85-a8d/18 "
    "a8f-a91/18 a93-aa8/18 aaa-ab0/18 ab2-ab3/18 ab5-ab9/18 abc-ac5/18 ac7-ac9/18 acb-acd/18 "
    "ad0/18 ae0-ae3/18 ae6-af1/18 af9/18 b01-b03/19 b05-b0c/19 b0f-b10/19 b13-b28/19 "
    "b2a-b30/19 b32-b33/19 b35-b39/19 b3c-b44/19 b47-b48/19 b4b-b4d/19 b56-b57/19 b5c-b5d/19 "
    "b5f-b63/19 b66-b77/19 b82-b83/20 b85-b8a/20 b8e-b90/20 b92-b95/20 b99-b9a/20 b9c/20 "
    "b9e-b9f/20 ba3-ba4/20 ba8-baa/20 bae-bb9/20 bbe-bc2/20 bc6-bc8/20 bca-bcd/20 bd0/20 "
    "bd7/20 be6-bfa/20 c00-c03/21 c05-c0c/21 c0e-c10/21 c12-c28/21 c2a-c39/21 c3d-c44/21 "
    "c46-c48/21 c4a-c4d/21 c55-c56/21 c58-c5a/21 c60-c63/21 c66-c6f/21 c78-c7f/21 c80-c83/22 "
    "c85-c8c/22 c8e-c90/22 c92-ca8/22 caa-cb3/22 cb5-cb9/22 cbc-cc4/22 cc6-cc8/22 cca-ccd/22 "
    "cd5-cd6/22 cde/22 ce0-ce3/22 ce6-cef/22 cf1-cf2/22 d01-d03/23 d05-d0c/23 d0e-d10/23 "
    "d12-d3a/23 d3d-d44/23 d46-d48/23 d4a-d4f/23 d54-d63/23 d66-d7f/23 d82-d83/24 d85-d96/24 "
    "d9a-db1/24 db3-dbb/24 dbd/24 dc0-dc6/24 dca/24 dcf-dd4/24 dd6/24 dd8-ddf/24 de6-def/24 "
    "df2-df4/24 e01-e3a/25 e3f/0 e40-e5b/25 e81-e82/26 e84/26 e87-e88/26 e8a/26 e8d/26 "
    "e94-e97/26 e99-e9f/26 ea1-ea3/26 ea5/26 ea7/26 eaa-eab/26 ead-eb9/26 ebb-ebd/26 "
    "ec0-ec4/26 ec6/26 ec8-ecd/26 ed0-ed9/26 edc-edf/26 f00-f47/27 f49-f6c/27 f71-f97/27 "
    "f99-fbc/27 fbe-fcc/27 fce-fd4/27 fd5-fd8/0 fd9-fda/27 1000-109f/28 10a0-10c5/29 10c7/29 "
    "10cd/29 10d0-10fa/29 10fb/0 10fc-10ff/29 1100-11ff/30 1200-1248/31 124a-124d/31 "
    "1250-1256/31 1258/31 125a-125d/31 1260-1288/31 128a-128d/31 1290-12b0/31 12b2-12b5/31 "
    "12b8-12be/31 12c0/31 12c2-12c5/31 12c8-12d6/31 12d8-1310/31 1312-1315/31 1318-135a/31 "
    "135d-137c/31 1380-1399/31 13a0-13f5/32 13f8-13fd/32 1400-167f/33 1680-169c/34 "
    "16a0-16ea/35 16eb-16ed/0 16ee-16f8/35 1700-170c/36 170e-1714/36 1720-1734/37 "
    "1735-1736/0 1740-1753/38 1760-176c/39 176e-1770/39 1772-1773/39 1780-17dd/40 "
    "17e0-17e9/40 17f0-17f9/40 1800-1801/41 1802-1803/0 1804/41 1805/0 1806-180e/41 "
    "1810-1819/41 1820-1877/41 1880-18aa/41 18b0-18f5/33 1900-191e/42 1920-192b/42 "
    "1930-193b/42 1940/42 1944-194f/42 1950-196d/43 1970-1974/43 1980-19ab/44 19b0-19c9/44 "
    "19d0-19da/44 19de-19df/44 19e0-19ff/40 1a00-1a1b/45 1a1e-1a1f/45 1a20-1a5e/46 "
    "1a60-1a7c/46 1a7f-1a89/46 1a90-1a99/46 1aa0-1aad/46 1ab0-1abe/3 1b00-1b4b/47 "
    "1b50-1b7c/47 1b80-1bbf/48 1bc0-1bf3/49 1bfc-1bff/49 1c00-1c37/50 1c3b-1c49/50 "
    "1c4d-1c4f/50 1c50-1c7f/51 1c80-1c88/6 1cc0-1cc7/48 1cd0-1cd2/3 1cd3/0 1cd4-1ce0/3 "
    "1ce1/0 1ce2-1ce8/3 1ce9-1cec/0 1ced/3 1cee-1cf3/0 1cf4/3 1cf5-1cf6/0 1cf8-1cf9/3 "
    "1d00-1d25/1 1d26-1d2a/4 1d2b/6 1d2c-1d5c/1 1d5d-1d61/4 1d62-1d65/1 1d66-1d6a/4 "
    "1d6b-1d77/1 1d78/6 1d79-1dbe/1 1dbf/4 1dc0-1df5/3 1dfb-1dff/3 1e00-1eff/1 1f00-1f15/4 "
    "1f18-1f1d/4 1f20-1f45/4 1f48-1f4d/4 1f50-1f57/4 1f59/4 1f5b/4 1f5d/4 1f5f-1f7d/4 "
    "1f80-1fb4/4 1fb6-1fc4/4 1fc6-1fd3/4 1fd6-1fdb/4 1fdd-1fef/4 1ff2-1ff4/4 1ff6-1ffe/4 "
    "2000-200b/0 200c-200d/3 200e-2064/0 2066-2070/0 2071/1 2074-207e/0 207f/1 2080-208e/0 "
    "2090-209c/1 20a0-20be/0 20d0-20f0/3 2100-2125/0 2126/4 2127-2129/0 212a-212b/1 "
    "212c-2131/0 2132/1 2133-214d/0 214e/1 214f-215f/0 2160-2188/1 2189-218b/0 2190-23fe/0 "
    "2400-2426/0 2440-244a/0 2460-27ff/0 2800-28ff/52 2900-2b73/0 2b76-2b95/0 2b98-2bb9/0 "
    "2bbd-2bc8/0 2bca-2bd1/0 2bec-2bef/0 2c00-2c2e/53 2c30-2c5e/53 2c60-2c7f/1 2c80-2cf3/5 "
    "2cf9-2cff/5 2d00-2d25/29 2d27/29 2d2d/29 2d30-2d67/54 2d6f-2d70/54 2d7f/54 2d80-2d96/31 "
    "2da0-2da6/31 2da8-2dae/31 2db0-2db6/31 2db8-2dbe/31 2dc0-2dc6/31 2dc8-2dce/31 "
    "2dd0-2dd6/31 2dd8-2dde/31 2de0-2dff/6 2e00-2e44/0 2e80-2e99/55 2e9b-2ef3/55 "
    "2f00-2fd5/55 2ff0-2ffb/0 3000-3004/0 3005/55 3006/0 3007/55 3008-3020/0 3021-3029/55 "
    "302a-302d/3 302e-302f/30 3030-3037/0 3038-303b/55 303c-303f/0 3041-3096/55 3099-309a/3 "
    "309b-309c/0 309d-309f/55 30a0/0 30a1-30fa/55 30fb/0 30fc-30ff/55 3105-312d/2 "
    "3131-318e/30 3190-319f/0 31a0-31ba/2 31c0-31e3/0 31f0-31ff/55 3200-321e/30 3220-325f/0 "
    "3260-327e/30 327f-32cf/0 32d0-32fe/55 3300-3357/55 3358-33ff/0 3400-4db5/55 4dc0-4dff/0 "
    "4e00-9fd5/55 a000-a48c/56 a490-a4c6/56 a4d0-a4ff/57 a500-a62b/58 a640-a69f/6 "
    "a6a0-a6f7/59 a700-a721/0 a722-a787/1 a788-a78a/0 a78b-a7ae/1 a7b0-a7b7/1 a7f7-a7ff/1 "
    "a800-a82b/60 a830-a839/0 a840-a877/61 a880-a8c5/62 a8ce-a8d9/62 a8e0-a8fd/15 "
    "a900-a92d/63 a92e/0 a92f/63 a930-a953/64 a95f/64 a960-a97c/30 a980-a9cd/65 a9cf/0 "
    "a9d0-a9d9/65 a9de-a9df/65 a9e0-a9fe/28 aa00-aa36/66 aa40-aa4d/66 aa50-aa59/66 "
    "aa5c-aa5f/66 aa60-aa7f/28 aa80-aac2/67 aadb-aadf/67 aae0-aaf6/68 ab01-ab06/31 "
    "ab09-ab0e/31 ab11-ab16/31 ab20-ab26/31 ab28-ab2e/31 ab30-ab5a/1 ab5b/0 ab5c-ab64/1 "
    "ab65/4 ab70-abbf/32 abc0-abed/68 abf0-abf9/68 ac00-d7a3/30 d7b0-d7c6/30 d7cb-d7fb/30 "
    "f900-fa6d/55 fa70-fad9/55 fb00-fb06/1 fb13-fb17/7 fb1d-fb36/8 fb38-fb3c/8 fb3e/8 "
    "fb40-fb41/8 fb43-fb44/8 fb46-fb4f/8 fb50-fbc1/9 fbd3-fd3d/9 fd3e-fd3f/0 fd50-fd8f/9 "
    "fd92-fdc7/9 fdf0-fdfd/9 fe00-fe0f/3 fe10-fe19/0 fe20-fe2d/3 fe2e-fe2f/6 fe30-fe52/0 "
    "fe54-fe66/0 fe68-fe6b/0 fe70-fe74/9 fe76-fefc/9 feff/0 ff01-ff20/0 ff21-ff3a/1 "
    "ff3b-ff40/0 ff41-ff5a/1 ff5b-ff65/0 ff66-ff6f/55 ff70/0 ff71-ff9d/55 ff9e-ff9f/0 "
    "ffa0-ffbe/30 ffc2-ffc7/30 ffca-ffcf/30 ffd2-ffd7/30 ffda-ffdc/30 ffe0-ffe6/0 "
    "ffe8-ffee/0 fff9-fffd/0 10000-1000b/69 1000d-10026/69 10028-1003a/69 1003c-1003d/69 "
    "1003f-1004d/69 10050-1005d/69 10080-100fa/69 10100-10102/0 10107-10133/0 10137-1013f/0 "
    "10140-1018e/4 10190-1019b/0 101a0/4 101d0-101fc/0 101fd/3 10280-1029c/70 102a0-102d0/71 "
    "102e0/3 102e1-102fb/0 10300-10323/72 10330-1034a/73 10350-1037a/74 10380-1039d/75 "
    "1039f/75 103a0-103c3/76 103c8-103d5/76 10400-1044f/77 10450-1047f/78 10480-1049d/79 "
    "104a0-104a9/79 104b0-104d3/80 104d8-104fb/80 10500-10527/81 10530-10563/82 1056f/82 "
    "10600-10736/83 10740-10755/83 10760-10767/83 10800-10805/84 10808/84 1080a-10835/84 "
    "10837-10838/84 1083c/84 1083f/84 10840-10855/85 10857-1085f/85 10860-1087f/86 "
    "10880-1089e/87 108a7-108af/87 108e0-108f2/88 108f4-108f5/88 108fb-108ff/88 "
    "10900-1091b/89 1091f/89 10920-10939/90 1093f/90 10980-1099f/91 109a0-109b7/92 "
    "109bc-109cf/92 109d2-109ff/92 10a00-10a03/93 10a05-10a06/93 10a0c-10a13/93 "
    "10a15-10a17/93 10a19-10a33/93 10a38-10a3a/93 10a3f-10a47/93 10a50-10a58/93 "
    "10a60-10a7f/94 10a80-10a9f/95 10ac0-10ae6/96 10aeb-10af6/96 10b00-10b35/97 "
    "10b39-10b3f/97 10b40-10b55/98 10b58-10b5f/98 10b60-10b72/99 10b78-10b7f/99 "
    "10b80-10b91/100 10b99-10b9c/100 10ba9-10baf/100 10c00-10c48/101 10c80-10cb2/102 "
    "10cc0-10cf2/102 10cfa-10cff/102 10e60-10e7e/9 11000-1104d/103 11052-1106f/103 1107f/103 "
    "11080-110c1/104 110d0-110e8/105 110f0-110f9/105 11100-11134/106 11136-11143/106 "
    "11150-11176/107 11180-111cd/108 111d0-111df/108 111e1-111f4/24 11200-11211/109 "
    "11213-1123e/109 11280-11286/110 11288/110 1128a-1128d/110 1128f-1129d/110 "
    "1129f-112a9/110 112b0-112ea/111 112f0-112f9/111 11300-11303/112 11305-1130c/112 "
    "1130f-11310/112 11313-11328/112 1132a-11330/112 11332-11333/112 11335-11339/112 "
    "1133c-11344/112 11347-11348/112 1134b-1134d/112 11350/112 11357/112 1135d-11363/112 "
    "11366-1136c/112 11370-11374/112 11400-11459/113 1145b/113 1145d/113 11480-114c7/114 "
    "114d0-114d9/114 11580-115b5/115 115b8-115dd/115 11600-11644/116 11650-11659/116 "
    "11660-1166c/41 11680-116b7/117 116c0-116c9/117 11700-11719/118 1171d-1172b/118 "
    "11730-1173f/118 118a0-118f2/119 118ff/119 11ac0-11af8/120 11c00-11c08/121 "
    "11c0a-11c36/121 11c38-11c45/121 11c50-11c6c/121 11c70-11c8f/122 11c92-11ca7/122 "
    "11ca9-11cb6/122 12000-12399/123 12400-1246e/123 12470-12474/123 12480-12543/123 "
    "13000-1342e/124 14400-14646/125 16800-16a38/59 16a40-16a5e/126 16a60-16a69/126 "
    "16a6e-16a6f/126 16ad0-16aed/127 16af0-16af5/127 16b00-16b45/128 16b50-16b59/128 "
    "16b5b-16b61/128 16b63-16b77/128 16b7d-16b8f/128 16f00-16f44/129 16f50-16f7e/129 "
    "16f8f-16f9f/129 16fe0/130 17000-187ec/130 18800-18af2/130 1b000-1b001/55 "
    "1bc00-1bc6a/131 1bc70-1bc7c/131 1bc80-1bc88/131 1bc90-1bc99/131 1bc9c-1bc9f/131 "
    "1bca0-1bca3/0 1d000-1d0f5/0 1d100-1d126/0 1d129-1d166/0 1d167-1d169/3 1d16a-1d17a/0 "
    "1d17b-1d182/3 1d183-1d184/0 1d185-1d18b/3 1d18c-1d1a9/0 1d1aa-1d1ad/3 1d1ae-1d1e8/0 "
    "1d200-1d245/4 1d300-1d356/0 1d360-1d371/0 1d400-1d454/0 1d456-1d49c/0 1d49e-1d49f/0 "
    "1d4a2/0 1d4a5-1d4a6/0 1d4a9-1d4ac/0 1d4ae-1d4b9/0 1d4bb/0 1d4bd-1d4c3/0 1d4c5-1d505/0 "
    "1d507-1d50a/0 1d50d-1d514/0 1d516-1d51c/0 1d51e-1d539/0 1d53b-1d53e/0 1d540-1d544/0 "
    "1d546/0 1d54a-1d550/0 1d552-1d6a5/0 1d6a8-1d7cb/0 1d7ce-1d7ff/0 1d800-1da8b/132 "
    "1da9b-1da9f/132 1daa1-1daaf/132 1e000-1e006/53 1e008-1e018/53 1e01b-1e021/53 "
    "1e023-1e024/53 1e026-1e02a/53 1e800-1e8c4/133 1e8c7-1e8d6/133 1e900-1e94a/134 "
    "1e950-1e959/134 1e95e-1e95f/134 1ee00-1ee03/9 1ee05-1ee1f/9 1ee21-1ee22/9 1ee24/9 "
    "1ee27/9 1ee29-1ee32/9 1ee34-1ee37/9 1ee39/9 1ee3b/9 1ee42/9 1ee47/9 1ee49/9 1ee4b/9 "
    "1ee4d-1ee4f/9 1ee51-1ee52/9 1ee54/9 1ee57/9 1ee59/9 1ee5b/9 1ee5d/9 1ee5f/9 "
    "1ee61-1ee62/9 1ee64/9 1ee67-1ee6a/9 1ee6c-1ee72/9 1ee74-1ee77/9 1ee79-1ee7c/9 1ee7e/9 "
    "1ee80-1ee89/9 1ee8b-1ee9b/9 1eea1-1eea3/9 1eea5-1eea9/9 1eeab-1eebb/9 1eef0-1eef1/9 "
    "1f000-1f02b/0 1f030-1f093/0 1f0a0-1f0ae/0 1f0b1-1f0bf/0 1f0c1-1f0cf/0 1f0d1-1f0f5/0 "
    "1f100-1f10c/0 1f110-1f12e/0 1f130-1f16b/0 1f170-1f1ac/0 1f1e6-1f1ff/0 1f200/55 "
    "1f201-1f202/0 1f210-1f23b/0 1f240-1f248/0 1f250-1f251/0 1f300-1f6d2/0 1f6e0-1f6ec/0 "
    "1f6f0-1f6f6/0 1f700-1f773/0 1f780-1f7d4/0 1f800-1f80b/0 1f810-1f847/0 1f850-1f859/0 "
    "1f860-1f887/0 1f890-1f8ad/0 1f910-1f91e/0 1f920-1f927/0 1f930/0 1f933-1f93e/0 "
    "1f940-1f94b/0 1f950-1f95e/0 1f980-1f991/0 1f9c0/0 20000-2a6d6/55 2a700-2b734/55 "
    "2b740-2b81d/55 2b820-2cea1/55 2f800-2fa1d/55 e0001/0 e0020-e007f/0 e0100-e01ef/3 "
)

# What the StripAccents normalizer removes: the library's combining marks (its own Unicode
# tables' Mn, Mc and Me, not the interpreter's). Read from the normalizer itself
# (stripped_marks_from_library).
STRIPPED_MARKS = (
    "300-36f 483-489 591-5bd 5bf 5c1-5c2 5c4-5c5 5c7 610-61a 64b-65f 670 6d6-6dc 6df-6e4 "
    "6e7-6e8 6ea-6ed 711 730-74a 7a6-7b0 7eb-7f3 816-819 81b-823 825-827 829-82d 859-85b "
    "8d4-8e1 8e3-903 93a-93c 93e-94f 951-957 962-963 981-983 9bc 9be-9c4 9c7-9c8 9cb-9cd 9d7 "
    "9e2-9e3 a01-a03 a3c a3e-a42 a47-a48 a4b-a4d a51 a70-a71 a75 a81-a83 abc abe-ac5 ac7-ac9 "
    "acb-acd ae2-ae3 b01-b03 b3c b3e-b44 b47-b48 b4b-b4d b56-b57 b62-b63 b82 bbe-bc2 bc6-bc8 "
    "bca-bcd bd7 c00-c03 c3e-c44 c46-c48 c4a-c4d c55-c56 c62-c63 c81-c83 cbc cbe-cc4 cc6-cc8 "
    "cca-ccd cd5-cd6 ce2-ce3 d01-d03 d3e-d44 d46-d48 d4a-d4d d57 d62-d63 d82-d83 dca dcf-dd4 "
    "dd6 dd8-ddf df2-df3 e31 e34-e3a e47-e4e eb1 eb4-eb9 ebb-ebc ec8-ecd f18-f19 f35 f37 f39 "
    "f3e-f3f f71-f84 f86-f87 f8d-f97 f99-fbc fc6 102b-103e 1056-1059 105e-1060 1062-1064 "
    "1067-106d 1071-1074 1082-108d 108f 109a-109d 135d-135f 1712-1714 1732-1734 1752-1753 "
    "1772-1773 17b4-17d3 17dd 180b-180d 1885-1886 18a9 1920-192b 1930-193b 1a17-1a1b "
    "1a55-1a5e 1a60-1a7c 1a7f 1ab0-1abe 1b00-1b04 1b34-1b44 1b6b-1b73 1b80-1b82 1ba1-1bad "
    "1be6-1bf3 1c24-1c37 1cd0-1cd2 1cd4-1ce8 1ced 1cf2-1cf4 1cf8-1cf9 1dc0-1df5 1dfb-1dff "
    "20d0-20f0 2cef-2cf1 2d7f 2de0-2dff 302a-302f 3099-309a a66f-a672 a674-a67d a69e-a69f "
    "a6f0-a6f1 a802 a806 a80b a823-a827 a880-a881 a8b4-a8c5 a8e0-a8f1 a926-a92d a947-a953 "
    "a980-a983 a9b3-a9c0 a9e5 aa29-aa36 aa43 aa4c-aa4d aa7b-aa7d aab0 aab2-aab4 aab7-aab8 "
    "aabe-aabf aac1 aaeb-aaef aaf5-aaf6 abe3-abea abec-abed fb1e fe00-fe0f fe20-fe2f 101fd "
    "102e0 10376-1037a 10a01-10a03 10a05-10a06 10a0c-10a0f 10a38-10a3a 10a3f 10ae5-10ae6 "
    "11000-11002 11038-11046 1107f-11082 110b0-110ba 11100-11102 11127-11134 11173 "
    "11180-11182 111b3-111c0 111ca-111cc 1122c-11237 1123e 112df-112ea 11300-11303 1133c "
    "1133e-11344 11347-11348 1134b-1134d 11357 11362-11363 11366-1136c 11370-11374 "
    "11435-11446 114b0-114c3 115af-115b5 115b8-115c0 115dc-115dd 11630-11640 116ab-116b7 "
    "1171d-1172b 11c2f-11c36 11c38-11c3f 11c92-11ca7 11ca9-11cb6 16af0-16af4 16b30-16b36 "
    "16f51-16f7e 16f8f-16f92 1bc9d-1bc9e 1d165-1d169 1d16d-1d172 1d17b-1d182 1d185-1d18b "
    "1d1aa-1d1ad 1d242-1d244 1da00-1da36 1da3b-1da6c 1da75 1da84 1da9b-1da9f 1daa1-1daaf "
    "1e000-1e006 1e008-1e018 1e01b-1e021 1e023-1e024 1e026-1e02a 1e8d0-1e8d6 1e944-1e94a "
    "e0100-e01ef "
)


def class_spec(name):
    """The range spec of class `name` (a key of CLASSES or PARTS), read as wordpiece's _ranges
    reads every spec (a range cut in two is refused there)."""
    return " ".join("".join(CLASSES[part]) for part in PARTS.get(name, (name,)))


def read_from_library(name, pattern=None):
    """The code points the library's \\p{name} (or the one-character regex `pattern`) matches
    (host only: it needs `tokenizers`)."""
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(pattern or r"\p{%s}" % name), behavior="removed")
    every = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    kept = set()
    for start in range(0, len(every), 50_000):
        for piece, _ in split.pre_tokenize_str("".join(every[start:start + 50_000])):
            kept.update(piece)
    return [ord(c) for c in every if c not in kept]


def as_ranges(code_points):
    """Sorted code points as a range spec, "41-5a 61-7a aa ..."."""
    items, start, prev = [], None, None
    for c in sorted(code_points):
        if prev is not None and c == prev + 1:
            prev = c
            continue
        if start is not None:
            items.append(f"{start:x}" if start == prev else f"{start:x}-{prev:x}")
        start = prev = c
    if start is not None:
        items.append(f"{start:x}" if start == prev else f"{start:x}-{prev:x}")
    return " ".join(items)


def numeric_from_library():
    """The code points the library's Digits pre-tokenizer isolates (host only)."""
    from tokenizers import pre_tokenizers

    digits = pre_tokenizers.Digits(individual_digits=True)
    every = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and c != ord("x")]
    numeric = []
    for start in range(0, len(every), 50_000):      # "cxcx...": a numeric c is a piece alone
        for piece, _ in digits.pre_tokenize_str("x".join(every[start:start + 50_000]) + "x"):
            if len(piece) == 1 and piece != "x":
                numeric.append(ord(piece))
    return numeric


def whitespace_word_from_library():
    """The code points the library's Whitespace pre-tokenizer reads as word characters (host
    only): "a" + c + "a" stays one piece exactly when c is one (two pieces: whitespace; three:
    neither)."""
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.Whitespace()
    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF
            and len(split.pre_tokenize_str("a" + chr(c) + "a")) == 1]


def unicode_scripts_from_library():
    """[(first, last, script)] of the library's UnicodeScripts pre-tokenizer, as UNICODE_SCRIPTS
    holds them (host only). Two code points share a script when their pair stays one piece; a
    code point is Any when it stays one piece beside both "a" (Latin) and U+0416 (Cyrillic)."""
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.UnicodeScripts()

    def one(text):
        return len(split.pre_tokenize_str(text)) == 1

    firsts, ranges, previous, previous_script = [], [], None, None
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        if one("a" + ch) and one("\u0416" + ch):
            script = None
        elif previous_script is not None and one(chr(previous) + ch):
            script = previous_script
        else:
            script = next((k for k, first in enumerate(firsts) if one(chr(first) + ch)), None)
            if script is None:
                firsts.append(c)
                script = len(firsts) - 1
        if script is not None:
            if ranges and ranges[-1][2] == script and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c, script])
        previous, previous_script = c, script
    return [tuple(r) for r in ranges]


def stripped_marks_from_library():
    """The code points the library's StripAccents normalizer removes (host only)."""
    from tokenizers import normalizers

    strip = normalizers.StripAccents()
    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF
            and strip.normalize_str(chr(c)) == ""]

def as_script_ranges(ranges):
    """[(first, last, script)] as UNICODE_SCRIPTS writes them."""
    return " ".join(f"{a:x}/{k}" if a == b else f"{a:x}-{b:x}/{k}" for a, b, k in ranges)


def script_ranges(spec):
    """UNICODE_SCRIPTS read back: [(first, last, script)]."""
    out = []
    for item in spec.split():
        span, script = item.split("/")
        first, _, last = span.partition("-")
        out.append((int(first, 16), int(last or first, 16), int(script)))
    return out

if __name__ == "__main__":
    for name in CLASSES:
        print(name, as_ranges(read_from_library(name)))
    print("NUMERIC_BEYOND_N", as_ranges(set(numeric_from_library()) - set(read_from_library("N"))))
    print("WHITESPACE_WORD", as_ranges(whitespace_word_from_library()))
    print("UNICODE_SCRIPTS", as_script_ranges(unicode_scripts_from_library()))
    print("STRIPPED_MARKS", as_ranges(stripped_marks_from_library()))
