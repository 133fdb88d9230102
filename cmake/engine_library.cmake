# The engine library: every host source under the architecture folders (dist/ included: the
# trainer is data-parallel; cmake/dist_library.cmake decides whether MPI is in).
# A new .cpp file in one of these folders is picked up without editing this file.
include(${CMAKE_CURRENT_LIST_DIR}/dist_library.cmake)
file(GLOB_RECURSE LL_HOST_SOURCES CONFIGURE_DEPENDS
  ${PROJECT_SOURCE_DIR}/common/*.cpp
  ${PROJECT_SOURCE_DIR}/engine/*.cpp
  ${PROJECT_SOURCE_DIR}/model/*.cpp
  ${PROJECT_SOURCE_DIR}/kernels/*.cpp
  ${PROJECT_SOURCE_DIR}/optim/*.cpp
  ${PROJECT_SOURCE_DIR}/data/*.cpp
  ${PROJECT_SOURCE_DIR}/dist/*.cpp)
list(FILTER LL_HOST_SOURCES EXCLUDE REGEX "/(kernels|dist)/cuda/")  # CUDA/NCCL: ll_cuda
if(NOT LL_ENABLE_MPI)
  list(FILTER LL_HOST_SOURCES EXCLUDE REGEX "/dist/mpi_communicator\\.cpp$")
endif()

function(ll_configure_engine_library target)
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LL_WARNINGS}>)
  target_link_libraries(${target} PUBLIC fmt::fmt yaml-cpp nlohmann_json::nlohmann_json CLI11::CLI11
    PkgConfig::SENTENCEPIECE PkgConfig::OPENBLAS OpenMP::OpenMP_CXX)
  if(LL_ENABLE_MPI)
    target_link_libraries(${target} PUBLIC MPI::MPI_CXX)
    target_compile_definitions(${target} PUBLIC LL_HAVE_MPI=1)
  endif()
endfunction()

add_library(ll_engine STATIC ${LL_HOST_SOURCES})
ll_configure_engine_library(ll_engine)

# The same sources with AddressSanitizer and UBSan, for the hostile-input tests.
add_library(ll_engine_asan STATIC ${LL_HOST_SOURCES})
ll_configure_engine_library(ll_engine_asan)
target_compile_options(ll_engine_asan PUBLIC -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
target_link_options(ll_engine_asan PUBLIC -fsanitize=address,undefined)

if(LL_HAVE_CUDA)
  file(GLOB_RECURSE LL_CUDA_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cu
    ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cpp)
  list(FILTER LL_CUDA_SOURCES EXCLUDE REGEX "/kernels/cuda/emu/")  # host build: ll_cuda_emu
  if(LL_CUDA_EMULATED)
    # The .cu files as C++ with the emulator's prelude first; the runtime and cuBLASLt are the
    # host stand-ins in kernels/cuda/emu/fake.
    file(GLOB LL_CUDA_FAKE_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/cuda/emu/fake/*.cpp)
    set(ll_cu_sources ${LL_CUDA_SOURCES})
    list(FILTER ll_cu_sources INCLUDE REGEX "\\.cu$")
    set_source_files_properties(${ll_cu_sources} PROPERTIES LANGUAGE CXX COMPILE_OPTIONS
      "-xc++;-include;${PROJECT_SOURCE_DIR}/kernels/cuda/emu/cuda_prelude.h;-Wno-unknown-pragmas;-fno-strict-aliasing")
    list(APPEND LL_CUDA_SOURCES ${LL_CUDA_FAKE_SOURCES})
  endif()
  add_library(ll_cuda STATIC ${LL_CUDA_SOURCES})
  target_include_directories(ll_cuda PUBLIC ${PROJECT_SOURCE_DIR})
  # Warnings as errors in device and host code; ptxas reports resources so spills are visible.
  target_compile_options(ll_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror,-Wno-unused-parameter -Xptxas=-v,-warn-spills,-warn-lmem-usage --resource-usage>)
  if(LL_CUDA_EMULATED)
    target_include_directories(ll_cuda SYSTEM PUBLIC ${CUDAToolkit_INCLUDE_DIRS})
    target_link_libraries(ll_cuda PUBLIC fmt::fmt)
    target_compile_definitions(ll_cuda PUBLIC LL_CUDA_EMULATED=1)
  else()
    target_link_libraries(ll_cuda PUBLIC CUDA::cudart CUDA::cublasLt fmt::fmt)
  endif()
  target_compile_options(ll_cuda PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LL_WARNINGS}>)
  target_compile_definitions(ll_cuda PUBLIC LL_HAVE_CUDA=1)
  # The CUDA backend (host code in ll_cuda) uses the engine's shape checks, and the engine's
  # backend factory (kernels/make_backend.cpp) constructs it: two static libraries that need
  # each other, which CMake links by repeating them. The sanitized engine stays CPU-only.
  target_link_libraries(ll_cuda PRIVATE ll_engine)
  target_link_libraries(ll_engine PUBLIC ll_cuda)
endif()

# The SIMT emulator (kernels/cuda/emu): CUDA kernels' device code compiled by the host
# compiler and run on the CPU, for tests on machines without a GPU. Needs the CUDA headers
# only. Always optimized: the emulated kernels are slow enough as it is.
if(LL_HAVE_CUDA_EMU)
  file(GLOB LL_CUDA_EMU_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/cuda/emu/*.cpp)
  add_library(ll_cuda_emu STATIC ${LL_CUDA_EMU_SOURCES})
  target_include_directories(ll_cuda_emu PUBLIC ${PROJECT_SOURCE_DIR})
  target_include_directories(ll_cuda_emu SYSTEM PUBLIC ${CUDAToolkit_INCLUDE_DIRS})
  # Device code carries #pragma unroll, which host compilers do not know.
  # Device code type-puns as nvcc allows (see cuda_prelude.h): no strict aliasing.
  target_compile_options(ll_cuda_emu PRIVATE ${LL_WARNINGS} -Wno-unknown-pragmas -O2)
  target_compile_options(ll_cuda_emu PUBLIC -fno-strict-aliasing)
  target_link_libraries(ll_cuda_emu PUBLIC ll_engine fmt::fmt)
  target_compile_definitions(ll_cuda_emu PUBLIC LL_HAVE_CUDA_EMU=1)
  if(LL_CUDA_EMULATED)
    target_link_libraries(ll_cuda PUBLIC ll_cuda_emu)
  endif()
endif()
