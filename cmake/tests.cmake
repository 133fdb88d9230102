# Every tests/**/test_*.cpp is one doctest executable, registered with ctest.
# Labels: "cpu" by default; a file named *_gpu.cpp gets "gpu", *_slow.cpp gets "slow",
# *_asan.cpp links the sanitized engine and gets "cpu;asan"; a name containing _emu links the
# SIMT emulator (tests/cuda_emu; CPU tests of the CUDA kernels' device code).
enable_testing()
file(GLOB_RECURSE LL_TEST_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/test_*.cpp)
if(NOT LL_ENABLE_MPI)
  list(FILTER LL_TEST_SOURCES EXCLUDE REGEX "_mpi\\.cpp$")  # they need the MPI communicator
endif()
add_library(ll_doctest_main OBJECT ${PROJECT_SOURCE_DIR}/tests/doctest_main.cpp)
target_link_libraries(ll_doctest_main PUBLIC doctest::doctest)

foreach(src ${LL_TEST_SOURCES})
  file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR}/tests ${src})
  string(REPLACE "/" "_" name ${rel})
  string(REPLACE ".cpp" "" name ${name})
  add_executable(${name} ${src} $<TARGET_OBJECTS:ll_doctest_main>)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(${name} PRIVATE ${LL_WARNINGS})
  target_compile_definitions(${name} PRIVATE
    LL_SOURCE_DIR="${PROJECT_SOURCE_DIR}" LL_BINARY_DIR="${PROJECT_BINARY_DIR}")
  set(labels cpu)
  if(name MATCHES "_asan$")
    target_link_libraries(${name} PRIVATE ll_engine_asan doctest::doctest)
    set(labels cpu asan)
  else()
    target_link_libraries(${name} PRIVATE ll_engine doctest::doctest)
  endif()
  if(name MATCHES "_emu" AND LL_HAVE_SIMT_EMULATOR)
    target_link_libraries(${name} PRIVATE ll_simt_emulator)
    # Tests that compile kernel headers for the emulator see their #pragma unroll.
    target_compile_options(${name} PRIVATE -Wno-unknown-pragmas)
  endif()
  if(name MATCHES "_gpu$")
    set(labels gpu)
    if(LL_HAVE_CUDA)
      target_link_libraries(${name} PRIVATE ll_cuda)
    endif()
  endif()
  if(name MATCHES "_slow$")
    set(labels cpu slow)
  endif()
  add_test(NAME ${name} COMMAND ${name} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  # doctest exits 0 with "skipped" in its output for GPU tests on machines without one.
  set_tests_properties(${name} PROPERTIES LABELS "${labels}" SKIP_RETURN_CODE 77)
endforeach()

# Every C++/CUDA source follows .clang-format (skips where clang-format 14 is missing).
add_test(NAME format_check COMMAND ${PROJECT_SOURCE_DIR}/scripts/format_check.sh
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(format_check PROPERTIES LABELS cpu SKIP_RETURN_CODE 77)
