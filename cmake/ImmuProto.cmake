# SPDX-License-Identifier: Apache-2.0
#
# gRPC wire schema: proto/*.proto -> C with protoc-c, at build time, into
# <build>/proto-gen, compiled into the static library `immupb`.
#
#   immupb    schema.pb-c.{c,h} (package immudb.schema, service ImmuService)
#             google/protobuf/{empty,struct}.pb-c.{c,h} (our minimal copies)
#             PUBLIC include dir: <build>/proto-gen (as a system directory,
#             so our strict warnings never fire on generated headers)
#             PUBLIC link: immu::protobuf_c
#
# Include as  #include "schema.pb-c.h"  (C names: Immudb__Schema__*).
# Needs protoc-c (IMMU_PROTOC_C) and libprotobuf-c (immu::protobuf_c), both
# looked up by ImmuDeps.cmake; scripts/deps.sh installs them
# (protobuf-c-compiler, libprotobuf-c-dev). Nothing else: no libprotobuf-dev.

if(NOT IMMU_PROTOC_C OR NOT TARGET immu::protobuf_c)
  message(FATAL_ERROR
    "immudb: the gRPC schema needs protoc-c and libprotobuf-c; install "
    "protobuf-c-compiler and libprotobuf-c-dev (scripts/deps.sh)")
endif()

set(IMMU_PROTO_SRC_DIR "${PROJECT_SOURCE_DIR}/proto")
set(IMMU_PROTO_GEN_DIR "${PROJECT_BINARY_DIR}/proto-gen")

# Paths relative to proto/ (which is the -I root, so these are also the
# import names and the layout of the generated files).
set(IMMU_PROTO_FILES
  schema.proto
  google/protobuf/empty.proto
  google/protobuf/struct.proto)

set(IMMU_PROTO_INPUTS "")
set(IMMU_PROTO_DEPENDS "")
set(IMMU_PROTO_OUTPUTS "")
set(IMMU_PROTO_C_SOURCES "")
foreach(f ${IMMU_PROTO_FILES})
  string(REGEX REPLACE "\\.proto$" "" stem "${f}")
  list(APPEND IMMU_PROTO_INPUTS "proto/${f}")
  list(APPEND IMMU_PROTO_DEPENDS "${IMMU_PROTO_SRC_DIR}/${f}")
  list(APPEND IMMU_PROTO_OUTPUTS
    "${IMMU_PROTO_GEN_DIR}/${stem}.pb-c.c"
    "${IMMU_PROTO_GEN_DIR}/${stem}.pb-c.h")
  list(APPEND IMMU_PROTO_C_SOURCES "${IMMU_PROTO_GEN_DIR}/${stem}.pb-c.c")
endforeach()

add_custom_command(
  OUTPUT ${IMMU_PROTO_OUTPUTS}
  COMMAND "${CMAKE_COMMAND}" -E make_directory "${IMMU_PROTO_GEN_DIR}"
  COMMAND "${IMMU_PROTOC_C}" "--c_out=${IMMU_PROTO_GEN_DIR}" -I proto
          ${IMMU_PROTO_INPUTS}
  WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
  DEPENDS ${IMMU_PROTO_DEPENDS}
  COMMENT "protoc-c: generating C for proto/*.proto"
  VERBATIM)

add_library(immupb STATIC ${IMMU_PROTO_OUTPUTS})
target_include_directories(immupb SYSTEM PUBLIC "${IMMU_PROTO_GEN_DIR}")
target_link_libraries(immupb PUBLIC immu::protobuf_c)
# Generated code: never our warning set (immu_warnings is per target and is
# not applied here); -w also silences anything the compiler warns by default.
target_compile_options(immupb PRIVATE -w)
