// Sliced ELLPACK with an in-register lookup: a prototype of a batch-1 sparse
// kernel vectorized across rows, measured against a dense AVX-512
// matrix-vector product on fc1's shape (300 x 784), for docs/pruning.md.
// Not part of lopper (the loop IR has no lane permute yet).
//
// Slices of 16 rows; each window of W columns (W = 16: the activations'
// vector; W = 4: four of them repeated in every 128-bit lane) gets as many
// slots as the slice's fullest row has nonzeros there; a slot is 16 weights
// (zero for rows with fewer) and 16 byte-sized lane numbers, and `vpermps`
// moves each row's activation into its lane. Slots come in groups of four,
// one accumulator each.
//
//   gcc -O3 -march=native -o /tmp/sliced_ell benches/proto/sliced_ell.c
//   taskset -c 1 /tmp/sliced_ell 0.1 16      # 90% sparse, windows of 16
//   taskset -c 1 /tmp/sliced_ell 0.05 16     # 95%
//   taskset -c 1 /tmp/sliced_ell 0.5 4 nm    # 2:4, windows of 4
//
// Prints the best of five timings of 20,000 calls each and the largest
// difference between the two results.
#include "common.h"
float W[R*C]; float x[C]; float y[R+16], y2[R+16];
float WT[C*RP] __attribute__((aligned(64)));
int main(int argc,char**argv){
  if(argc<3){fprintf(stderr,"usage: %s DENSITY WINDOW(4|16) [nm]\n",argv[0]);return 2;}
  double dens=atof(argv[1]); int Wn=atoi(argv[2]); int nm=argc>3;
  if(Wn!=4&&Wn!=16){fprintf(stderr,"WINDOW is 4 or 16\n");return 2;}
  make_weights(W, dens, nm);
  make_input(x);
  pack_dense(W, WT);
  // build SELL: slices of 16 rows, windows of Wn cols
  int S=(R+15)/16; int nw=(C+Wn-1)/Wn;
  float *vals=aligned_alloc(64, 64*200000); uint8_t *lanes=aligned_alloc(64,16*200000); int32_t *win=malloc(4*200000); int *sptr=malloc(4*(S+1));
  int ns=0; sptr[0]=0;
  for(int s=0;s<S;s++){
    for(int w=0;w<nw;w++){ int c0=w*Wn; if(c0+Wn>C) c0=C-Wn;
      int cnt[16]={0}; int maxc=0; int idx[16][16];
      for(int l=0;l<16;l++){int r=s*16+l; if(r>=R)continue; for(int k=(w*Wn)-c0;k<Wn;k++){ if(W[r*C+c0+k]!=0){ idx[l][cnt[l]++]=k; }} if(cnt[l]>maxc)maxc=cnt[l];}
      for(int q=0;q<maxc;q++){ for(int l=0;l<16;l++){int r=s*16+l; int has= r<R && q<cnt[l]; vals[ns*16+l]= has? W[r*C+c0+idx[l][q]]:0; lanes[ns*16+l]= has? idx[l][q]:0;} win[ns]=c0; ns++; }
    }
    while(ns%4){ for(int l=0;l<16;l++){vals[ns*16+l]=0;lanes[ns*16+l]=0;} win[ns]=0; ns++; }
    sptr[s+1]=ns;
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
        for(int p=sptr[s];p<sptr[s+1];p+=4){
#define SLOT(a,q) { __m512 t = (Wn==16)? _mm512_loadu_ps(&x[win[p+q]]) : _mm512_broadcast_f32x4(_mm_loadu_ps(&x[win[p+q]])); \
   __m512i ix=_mm512_cvtepu8_epi32(_mm_load_si128((__m128i*)&lanes[(p+q)*16])); \
   a = _mm512_fmadd_ps(_mm512_load_ps(&vals[(p+q)*16]), _mm512_permutexvar_ps(ix,t), a);}
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
