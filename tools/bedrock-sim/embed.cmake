# Writes OUT, a C file defining sim_model_builtin[] / sim_model_builtin_len with the bytes of
# IN (the shapes file), so that bedrock-sim checks requests against botocore's model without
# a --model flag. Run by the build (cmake -P), no tools beyond cmake.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}" "/* Generated from bedrock-runtime.model.json by embed.cmake; do not edit. */\n"
  "#include <stddef.h>\n"
  "const unsigned char sim_model_builtin[] = {\n${bytes}0x00};\n"
  "const size_t sim_model_builtin_len = ${len};\n")
