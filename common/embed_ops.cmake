# Turns config/operations.json (IN) into a C source (OUT) defining aiq__ops_builtin_json
# (NUL-terminated) and aiq__ops_builtin_len: the shipped file is also the built-in default.
# Run as: cmake -DIN=... -DOUT=... -P embed_ops.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" hexlen)
math(EXPR len "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}"
  "/* Generated from ${IN} by common/embed_ops.cmake; do not edit. */\n"
  "#include <stddef.h>\n"
  "extern const char aiq__ops_builtin_json[];\n"
  "extern const size_t aiq__ops_builtin_len;\n"
  "const char aiq__ops_builtin_json[] = {\n${bytes}0x00};\n"
  "const size_t aiq__ops_builtin_len = ${len};\n")
