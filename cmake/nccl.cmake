# NCCL (collectives between GPUs) for the data-parallel CUDA path: dist/cuda/*.cpp join the CUDA
# library when the CUDA backend is built and NCCL >= 2.14 is found (the CUDA toolkit's lib64 and
# include, or the usual system paths: libnccl-dev). 2.14 brought what the communicator relies on:
# nonblocking communicators (ncclConfig_t), ncclCommFinalize. Without NCCL the CUDA backend still
# builds and the NCCL tests (tests/dist/test_nccl_*_gpu.cpp) skip with a message: they check
# LL_HAVE_NCCL, defined here for everything that links ll_cuda.
set(LL_HAVE_NCCL OFF)
if(LL_HAVE_CUDA)
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  set(ll_nccl_version "")
  if(NCCL_INCLUDE_DIR)
    file(STRINGS ${NCCL_INCLUDE_DIR}/nccl.h ll_nccl_major REGEX "^#define NCCL_MAJOR [0-9]+")
    file(STRINGS ${NCCL_INCLUDE_DIR}/nccl.h ll_nccl_minor REGEX "^#define NCCL_MINOR [0-9]+")
    string(REGEX REPLACE "[^0-9]" "" ll_nccl_major "${ll_nccl_major}")
    string(REGEX REPLACE "[^0-9]" "" ll_nccl_minor "${ll_nccl_minor}")
    set(ll_nccl_version "${ll_nccl_major}.${ll_nccl_minor}")
  endif()
  if(NCCL_LIBRARY AND NCCL_INCLUDE_DIR AND ll_nccl_version VERSION_GREATER_EQUAL 2.14)
    file(GLOB LL_NCCL_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/dist/cuda/*.cpp)
    target_sources(ll_cuda PRIVATE ${LL_NCCL_SOURCES})
    target_include_directories(ll_cuda PUBLIC ${NCCL_INCLUDE_DIR})
    target_link_libraries(ll_cuda PUBLIC ${NCCL_LIBRARY})
    target_compile_definitions(ll_cuda PUBLIC LL_HAVE_NCCL=1)
    set(LL_HAVE_NCCL ON)
  endif()
  message(STATUS "NCCL: ${LL_HAVE_NCCL} (version '${ll_nccl_version}', needs >= 2.14; library "
                 "${NCCL_LIBRARY}, header in ${NCCL_INCLUDE_DIR})")
else()
  message(STATUS "NCCL: OFF (no CUDA backend)")
endif()
