# Data-parallel runtime (dist/): communicators over MPI, shard layouts, run agreement.
# Its own library so that only what uses MPI links it; the engine itself stays MPI-free.
# MPI (Open MPI from Debian, installed by `make setup`) is required unless LL_ENABLE_MPI is
# OFF: the GPU check machine has no Debian MPI, and a world of one needs none.
option(LL_ENABLE_MPI "Build the MPI communicator (multi-process training)" ON)
file(GLOB LL_DIST_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/dist/*.cpp)
if(LL_ENABLE_MPI)
  find_package(MPI REQUIRED COMPONENTS CXX)
else()
  list(FILTER LL_DIST_SOURCES EXCLUDE REGEX "/dist/mpi_communicator\\.cpp$")
endif()
message(STATUS "MPI communicator: ${LL_ENABLE_MPI}")
add_library(ll_dist STATIC ${LL_DIST_SOURCES})
target_include_directories(ll_dist PUBLIC ${PROJECT_SOURCE_DIR})
target_compile_options(ll_dist PRIVATE ${LL_WARNINGS})
target_link_libraries(ll_dist PUBLIC ll_engine)
if(LL_ENABLE_MPI)
  target_link_libraries(ll_dist PUBLIC MPI::MPI_CXX)
  target_compile_definitions(ll_dist PUBLIC LL_HAVE_MPI=1)
endif()
