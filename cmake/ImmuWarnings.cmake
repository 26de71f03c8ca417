# SPDX-License-Identifier: Apache-2.0
#
# Warning flags for our own targets (never for generated code).
#
#   immu_warnings(<target>)        the full house set (library, tools)
#   immu_test_warnings(<target>)   the same, minus the prototype checks
#                                  (tests and fuzz targets)
#
# Future tightening: -Wconversion -Wsign-conversion, and on clang
# -Wshorten-64-to-32 -Wmissing-variable-declarations (style anchors §7.15).

set(IMMU_WARNING_FLAGS
  -Wall -Wextra -Wshadow -Wstrict-prototypes
  -Wmissing-prototypes -Wmissing-declarations
  -Wpointer-arith -Wwrite-strings -Wformat-security -Wformat=2
  -Wvla -Wcast-align -Wundef -Wredundant-decls -Wpedantic)
if(CMAKE_C_COMPILER_ID MATCHES "Clang")
  list(APPEND IMMU_WARNING_FLAGS -Wimplicit-fallthrough)
endif()
if(IMMU_WERROR)
  list(APPEND IMMU_WARNING_FLAGS -Werror)
endif()

function(immu_warnings tgt)
  target_compile_options(${tgt} PRIVATE ${IMMU_WARNING_FLAGS})
endfunction()

function(immu_test_warnings tgt)
  target_compile_options(${tgt} PRIVATE ${IMMU_WARNING_FLAGS}
    -Wno-missing-prototypes -Wno-missing-declarations)
endfunction()
