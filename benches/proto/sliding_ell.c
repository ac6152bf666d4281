// Sliced ELLPACK with sliding windows: the prototype behind lopper's
// `sell16` kernel (passes/src/sparse_cost.rs, `sell_slots`), measured
// against a dense AVX-512 matrix-vector product on fc1's shape (300 x 784),
// for docs/pruning.md. Slices of 16 rows; a slot's window of WIDTH columns
// starts at the leftmost nonzero any row of the slice has left, rounded down
// to ALIGN columns, and takes each row's next nonzero if it lies inside.
// WIDTH 32 looks lanes up in two vectors (`vpermt2ps`). OFF shifts the
// activations by that many floats from a 64-byte boundary (-DOFF=1: every
// window load crosses a cache line).
//
//   gcc -O3 -march=native -o /tmp/sliding_ell benches/proto/sliding_ell.c
//   taskset -c 1 /tmp/sliding_ell 0.05 16 8     # 95% sparse, windows of 16 on 8 columns
//   taskset -c 1 /tmp/sliding_ell 0.1 16 16     # 90%, a fixed grid of windows
//   taskset -c 1 /tmp/sliding_ell 0.1 32 8      # 90%, windows of 32
//   taskset -c 1 /tmp/sliding_ell 0.5 16 8 nm   # 2:4
//
// Prints the slots and the best of five timings of 20,000 calls each.
#include "common.h"
#ifndef OFF
#define OFF 0
#endif
float W[R*C]; float xs[C+64] __attribute__((aligned(64))); float *x=xs+OFF; float y[R+16], y2[R+16];
float WT[C*RP] __attribute__((aligned(64)));
int main(int argc,char**argv){
  if(argc<4){fprintf(stderr,"usage: %s DENSITY WIDTH(16|32) ALIGN [nm]\n",argv[0]);return 2;}
  double dens=atof(argv[1]); int Wn=atoi(argv[2]); int AL=atoi(argv[3]); int nm=argc>4;
  if((Wn!=16&&Wn!=32)||AL<1||AL>Wn){fprintf(stderr,"WIDTH is 16 or 32, ALIGN 1..WIDTH\n");return 2;}
  make_weights(W, dens, nm);
  make_input(x);
  pack_dense(W, WT);
  int S=(R+15)/16;
  float *vals=aligned_alloc(64, 64*200000); uint8_t *lanes=aligned_alloc(64,16*200000); int16_t *win=malloc(2*200000); int *sptr=malloc(4*(S+1));
  int ns=0; sptr[0]=0;
  for(int s=0;s<S;s++){
    int pos[16]; for(int l=0;l<16;l++)pos[l]=0;
    for(;;){
      int first=C; for(int l=0;l<16;l++){int r=s*16+l; if(r>=R)continue; while(pos[l]<C && W[r*C+pos[l]]==0)pos[l]++; if(pos[l]<first)first=pos[l];}
      if(first>=C)break;
      int c0=first/AL*AL; if(c0>C-Wn)c0=C-Wn;
      for(int l=0;l<16;l++){int r=s*16+l; int has= r<R && pos[l]<c0+Wn; vals[ns*16+l]= has? W[r*C+pos[l]]:0; lanes[ns*16+l]= has? pos[l]-c0:0; if(has)pos[l]++;}
      win[ns]=c0; ns++;
    }
    while(ns%4){ for(int l=0;l<16;l++){vals[ns*16+l]=0;lanes[ns*16+l]=0;} win[ns]=0; ns++; }
    sptr[s+1]=ns/4;
  }
  printf("slots %d\n", ns);
  int N=20000; double best_d=1e9,best_s=1e9;
  for(int rep=0;rep<5;rep++){
    double t0=now();
    for(int it=0;it<N;it++){
      dense_matvec(WT, x, y);
      __asm__ volatile(""::"r"(y):"memory");
    }
    double t1=now();
    for(int it=0;it<N;it++){
      for(int s=0;s<S;s++){
        __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
        for(int g=sptr[s];g<sptr[s+1];g++){ int p=g*4;
#define SLOT(a,q) { __m512i ix=_mm512_cvtepu8_epi32(_mm_load_si128((__m128i*)&lanes[(p+q)*16])); __m512 v; \
   if(Wn==16) v=_mm512_permutexvar_ps(ix,_mm512_loadu_ps(&x[win[p+q]])); else v=_mm512_permutex2var_ps(_mm512_loadu_ps(&x[win[p+q]]), ix, _mm512_loadu_ps(&x[win[p+q]+16])); \
   a = _mm512_fmadd_ps(_mm512_load_ps(&vals[(p+q)*16]), v, a);}
          SLOT(a0,0) SLOT(a1,1) SLOT(a2,2) SLOT(a3,3)
        }
        _mm512_storeu_ps(&y2[s*16], _mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)));
      }
      __asm__ volatile(""::"r"(y2):"memory");
    }
    double t2=now();
    if((t1-t0)/N<best_d)best_d=(t1-t0)/N;
    if((t2-t1)/N<best_s)best_s=(t2-t1)/N;
  }
  double err=0; for(int r=0;r<R;r++){double d=y[r]-y2[r]; if(d<0)d=-d; if(d>err)err=d;}
  printf("dense %.2f us  sell %.2f us  ratio %.2f  err %g\n", best_d*1e6, best_s*1e6, best_d/best_s, err);
}
