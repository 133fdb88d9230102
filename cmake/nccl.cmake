# NCCL (collectives between GPUs) for the data-parallel CUDA path: engine/parallel/cuda/*.cpp join
# ll_parallel when the CUDA backend is built and NCCL >= 2.14 is found (the CUDA toolkit's lib64 and
# include, the usual system paths: libnccl-dev, or PyTorch's nvidia-nccl wheel). 2.14 brought what the communicator relies on:
# nonblocking communicators (ncclConfig_t), ncclCommFinalize. Without NCCL the CUDA backend still
# builds and the NCCL tests (tests/engine/parallel/test_nccl_*_gpu.cpp) skip with a message: they check
# LL_HAVE_NCCL, defined here for everything that links ll_parallel.
# The emulated build never looks for NCCL: it builds against the stand-in (tests/cuda_emu/fake/
# fake_nccl.cpp, part of ll_cuda there, and its subset of nccl.h in tests/cuda_emu/fake/nccl, put
# before any installed nccl.h), so the same engine code runs its collectives on threads.
set(LL_HAVE_NCCL OFF)
if(LL_HAVE_CUDA AND LL_CUDA_BACKEND_EMULATED)
  target_include_directories(ll_cuda BEFORE PUBLIC ${PROJECT_SOURCE_DIR}/tests/cuda_emu/fake/nccl)
  file(GLOB LL_NCCL_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/engine/parallel/cuda/*.cpp)
  target_sources(ll_parallel PRIVATE ${LL_NCCL_SOURCES})
  target_link_libraries(ll_parallel PUBLIC ll_cuda)
  target_compile_definitions(ll_parallel PUBLIC LL_HAVE_NCCL=1)
  set(LL_HAVE_NCCL ON)
  message(STATUS "NCCL: emulated (threads in one process, tests/cuda_emu/fake/fake_nccl.cpp)")
elseif(LL_HAVE_CUDA)
  # Last resort: the NCCL wheel PyTorch installs (nvidia-nccl-cu12/cu13: site-packages/nvidia/
  # nccl/{include,lib}, the library only as libnccl.so.2), as on the GPU check machine, whose
  # CUDA toolkit may come without NCCL.
  set(ll_nccl_wheel "")
  find_program(LL_PYTHON3 python3)
  if(LL_PYTHON3)
    execute_process(
      COMMAND ${LL_PYTHON3} -c "import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0])"
      OUTPUT_VARIABLE ll_nccl_wheel OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2
    HINTS ${CUDAToolkit_LIBRARY_DIR} PATHS ${ll_nccl_wheel}/lib)
  if(ll_nccl_wheel AND NCCL_LIBRARY AND NCCL_LIBRARY MATCHES "^${ll_nccl_wheel}/")
    # The header of the same NCCL as the library.
    find_path(NCCL_INCLUDE_DIR nccl.h PATHS ${ll_nccl_wheel}/include NO_DEFAULT_PATH)
  else()
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} PATHS ${ll_nccl_wheel}/include)
  endif()
  set(ll_nccl_version "")
  if(NCCL_INCLUDE_DIR)
    file(STRINGS ${NCCL_INCLUDE_DIR}/nccl.h ll_nccl_major REGEX "^#define NCCL_MAJOR [0-9]+")
    file(STRINGS ${NCCL_INCLUDE_DIR}/nccl.h ll_nccl_minor REGEX "^#define NCCL_MINOR [0-9]+")
    string(REGEX REPLACE "[^0-9]" "" ll_nccl_major "${ll_nccl_major}")
    string(REGEX REPLACE "[^0-9]" "" ll_nccl_minor "${ll_nccl_minor}")
    set(ll_nccl_version "${ll_nccl_major}.${ll_nccl_minor}")
  endif()
  if(NCCL_LIBRARY AND NCCL_INCLUDE_DIR AND ll_nccl_version VERSION_GREATER_EQUAL 2.14)
    file(GLOB LL_NCCL_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/engine/parallel/cuda/*.cpp)
    target_sources(ll_parallel PRIVATE ${LL_NCCL_SOURCES})
    target_include_directories(ll_parallel PUBLIC ${NCCL_INCLUDE_DIR})
    target_link_libraries(ll_parallel PUBLIC ll_cuda)
    target_link_libraries(ll_parallel PUBLIC ${NCCL_LIBRARY})
    target_compile_definitions(ll_parallel PUBLIC LL_HAVE_NCCL=1)
    set(LL_HAVE_NCCL ON)
  endif()
  message(STATUS "NCCL: ${LL_HAVE_NCCL} (version '${ll_nccl_version}', needs >= 2.14; library "
                 "${NCCL_LIBRARY}, header in ${NCCL_INCLUDE_DIR})")
else()
  message(STATUS "NCCL: OFF (no CUDA backend)")
endif()
