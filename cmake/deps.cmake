# Every dependency is a Debian 12 package (scripts/install-deps.sh); nothing is downloaded.
find_package(Threads REQUIRED)
find_package(Boost 1.74 REQUIRED)
find_package(simdjson REQUIRED)
# No exceptions from simdjson: every conversion must go through .get(), so a malformed body can
# never throw through the request path (a fuzzer found one that did).
add_compile_definitions(SIMDJSON_EXCEPTIONS=0)
find_package(yaml-cpp REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(OpenSSL REQUIRED)
if(SLUICE_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(SLUICE_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
find_package(PkgConfig REQUIRED)
pkg_check_modules(RE2 REQUIRED IMPORTED_TARGET re2)
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
# ext_proc and gRPC health messages (src/extproc/proto): protoc and libprotobuf.
find_package(Protobuf REQUIRED)
