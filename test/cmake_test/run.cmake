# The consumer tests (ctest label cmake_test): installs the build tree into a fresh prefix, then configures,
# builds and runs test/cmake_test's consumer three ways: find_package of the whole package, find_package
# of COMPONENTS core with OpenSSL and pkg-config (hence hiredis) made unfindable, and add_subdirectory of
# the source tree. Any missing install rule, exported target or find_dependency fails a step.
#
# Cheap on purpose: the consumers compile at -O0 without sanitizers, with one configure each. When the
# installed libraries are instrumented (the asan and tsan presets), the consumers link the same
# sanitizer runtime (LINK_FLAGS).
#
#   cmake -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK_DIR=... -DCXX=... [-DLINK_FLAGS=...] [-DLAUNCHER=...]
#         -P run.cmake
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR CXX)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake needs -D${var}=...")
  endif()
endforeach()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "cmake_test: failed (${rc}): ${cmd}")
  endif()
endfunction()

message(STATUS "cmake_test: install into ${prefix}")
step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# The pkg-config files: valid, and pointing into the prefix they were installed in.
find_program(PKG_CONFIG pkg-config)
if(PKG_CONFIG)
  foreach(pc creditguard-core creditguard)
    set(ENV{PKG_CONFIG_PATH} ${prefix}/lib/pkgconfig)
    step(${PKG_CONFIG} --validate ${pc})
    execute_process(COMMAND ${PKG_CONFIG} --cflags --libs ${pc} OUTPUT_VARIABLE flags RESULT_VARIABLE rc)
    string(REGEX MATCH "-I([^ ]+)" _ "${flags}")
    set(include_dir ${CMAKE_MATCH_1})
    string(REGEX MATCH "-L([^ ]+)" _ "${flags}")
    set(lib_dir ${CMAKE_MATCH_1})
    if(NOT rc EQUAL 0 OR NOT EXISTS "${include_dir}/creditguard/version.hpp"
       OR NOT EXISTS "${lib_dir}/libcreditguard_core.a")
      message(FATAL_ERROR "cmake_test: pkg-config ${pc} gives '${flags}'")
    endif()
  endforeach()
endif()

set(common -G Ninja -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE= -DCMAKE_CXX_FLAGS=-O0
           "-DCMAKE_EXE_LINKER_FLAGS=${LINK_FLAGS}" -DCMAKE_DISABLE_PRECOMPILE_HEADERS=ON)
if(LAUNCHER)
  list(APPEND common -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
endif()

foreach(consumer package core subdirectory)
  set(dir ${WORK_DIR}/${consumer})
  set(args ${common} -DCONSUMER=${consumer})
  if(consumer STREQUAL "subdirectory")
    list(APPEND args -DCREDITGUARD_SOURCE_DIR=${SOURCE_DIR})
  else()
    list(APPEND args -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_PACKAGE_NO_SYSTEM_PACKAGE_REGISTRY=ON)
  endif()
  if(consumer STREQUAL "core")
    list(APPEND args -DCMAKE_DISABLE_FIND_PACKAGE_OpenSSL=ON -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON)
  endif()
  message(STATUS "cmake_test: ${consumer}")
  step(${CMAKE_COMMAND} -S ${SOURCE_DIR}/test/cmake_test -B ${dir} ${args})
  step(${CMAKE_COMMAND} --build ${dir} --target consumer)
  step(${dir}/consumer)
endforeach()
