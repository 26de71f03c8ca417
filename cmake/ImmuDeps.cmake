# SPDX-License-Identifier: Apache-2.0
#
# Third-party dependencies.
#
# Required: OpenSSL 3 (libcrypto, libssl), Threads, libm; cmocka when tests
# are built. Optional for now: every other library is looked up and, when
# found, exposed as an imported target with a stable name (immu::<name>) and
# a variable IMMU_HAVE_<NAME>=ON. Code that needs one of them must check the
# variable (or the target) so that a machine without it still configures.
#
#   immu::nghttp2          libnghttp2
#   immu::event_core       libevent_core      immu::event_pthreads  libevent_pthreads
#   immu::event_openssl    libevent_openssl   immu::event_extra     libevent_extra
#   immu::protobuf_c       libprotobuf-c      IMMU_PROTOC_C         protoc-c program
#   immu::rocksdb          librocksdb (find_library + rocksdb/c.h; no .pc on Debian)
#   immu::crypt            libcrypt           immu::edit            libedit
#   immu::sqlite3          sqlite3

find_package(PkgConfig REQUIRED)
find_package(OpenSSL 3 REQUIRED)
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)

# immu_optional_pkg(<name> <pkg-config module>)
# Defines immu::<name> and IMMU_HAVE_<NAME> when the module is found.
function(immu_optional_pkg name module)
  string(TOUPPER "${name}" upper)
  pkg_check_modules(IMMU_PC_${upper} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(IMMU_PC_${upper}_FOUND)
    add_library(immu::${name} INTERFACE IMPORTED GLOBAL)
    target_link_libraries(immu::${name} INTERFACE PkgConfig::IMMU_PC_${upper})
    set(IMMU_HAVE_${upper} ON PARENT_SCOPE)
    list(APPEND IMMU_FOUND_OPTIONAL "${module}")
  else()
    set(IMMU_HAVE_${upper} OFF PARENT_SCOPE)
    list(APPEND IMMU_MISSING_OPTIONAL "${module}")
  endif()
  set(IMMU_FOUND_OPTIONAL "${IMMU_FOUND_OPTIONAL}" PARENT_SCOPE)
  set(IMMU_MISSING_OPTIONAL "${IMMU_MISSING_OPTIONAL}" PARENT_SCOPE)
endfunction()

set(IMMU_FOUND_OPTIONAL "")
set(IMMU_MISSING_OPTIONAL "")

immu_optional_pkg(nghttp2 libnghttp2)
immu_optional_pkg(event_core libevent_core)
immu_optional_pkg(event_pthreads libevent_pthreads)
immu_optional_pkg(event_openssl libevent_openssl)
immu_optional_pkg(event_extra libevent_extra)
immu_optional_pkg(protobuf_c libprotobuf-c)
immu_optional_pkg(crypt libcrypt)
immu_optional_pkg(edit libedit)
immu_optional_pkg(sqlite3 sqlite3)

find_program(IMMU_PROTOC_C NAMES protoc-c)
if(IMMU_PROTOC_C)
  list(APPEND IMMU_FOUND_OPTIONAL "protoc-c")
else()
  list(APPEND IMMU_MISSING_OPTIONAL "protoc-c")
endif()

# RocksDB ships no pkg-config file on Debian.
find_library(IMMU_ROCKSDB_LIBRARY NAMES rocksdb)
find_path(IMMU_ROCKSDB_INCLUDE_DIR NAMES rocksdb/c.h)
if(IMMU_ROCKSDB_LIBRARY AND IMMU_ROCKSDB_INCLUDE_DIR)
  add_library(immu::rocksdb UNKNOWN IMPORTED GLOBAL)
  set_target_properties(immu::rocksdb PROPERTIES
    IMPORTED_LOCATION "${IMMU_ROCKSDB_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${IMMU_ROCKSDB_INCLUDE_DIR}")
  set(IMMU_HAVE_ROCKSDB ON)
  list(APPEND IMMU_FOUND_OPTIONAL "rocksdb")
else()
  set(IMMU_HAVE_ROCKSDB OFF)
  list(APPEND IMMU_MISSING_OPTIONAL "rocksdb")
endif()

# Every optional library that was found, for targets that want them all.
set(IMMU_OPTIONAL_TARGETS "")
foreach(n nghttp2 event_core event_pthreads event_openssl event_extra
          protobuf_c crypt edit sqlite3 rocksdb)
  if(TARGET immu::${n})
    list(APPEND IMMU_OPTIONAL_TARGETS immu::${n})
  endif()
endforeach()

# The engine, the server and the client cannot be built without these:
# fail at configure time with the package to install, not later with a
# missing header.
foreach(req nghttp2:libnghttp2-dev event_core:libevent-dev
            event_pthreads:libevent-dev event_openssl:libevent-dev
            event_extra:libevent-dev protobuf_c:libprotobuf-c-dev
            crypt:libcrypt-dev rocksdb:librocksdb-dev)
  string(REPLACE ":" ";" pair "${req}")
  list(GET pair 0 n)
  list(GET pair 1 pkg)
  if(NOT TARGET immu::${n})
    message(FATAL_ERROR "immudb: ${n} is required: install ${pkg} "
                        "(scripts/deps.sh does it)")
  endif()
endforeach()

message(STATUS "immudb: optional dependencies found: ${IMMU_FOUND_OPTIONAL}")
if(IMMU_MISSING_OPTIONAL)
  message(STATUS "immudb: optional dependencies MISSING: ${IMMU_MISSING_OPTIONAL}")
endif()

if(IMMU_BUILD_TESTS)
  pkg_check_modules(IMMU_PC_CMOCKA REQUIRED IMPORTED_TARGET GLOBAL cmocka)
  add_library(immu::cmocka INTERFACE IMPORTED GLOBAL)
  target_link_libraries(immu::cmocka INTERFACE PkgConfig::IMMU_PC_CMOCKA)
endif()
