// Gathers on a batch-1 sparse matrix-vector product: why lopper's sparse
// kernels for one row permute lanes instead (docs/pruning.md). On fc1's shape
// (300 x 784), against a dense AVX-512 matrix-vector product: scalar CSR
// with four chains (lopper's batch-row kernel), CSR rows padded to 16 that
// gather their activations 16 (or 8) at a time (`vgatherdps`), and sliced
// ELLPACK (slices of 16 rows, slot k holding each row's k-th nonzero) that
// gathers.
//
//   gcc -O3 -march=native -o /tmp/gather benches/proto/gather.c
//   taskset -c 1 /tmp/gather 0.05       # 95% sparse
//   taskset -c 1 /tmp/gather 0.5 nm     # 2:4
//
// Prints the best of five timings of 20,000 calls each and the largest
// difference from the dense result.
#include "common.h"
float W[R*C]; float x[C+64]; float y[R+16], y2[R+16], y3[R+16], y4[R+16], y5[R+16];
float WT[C*RP] __attribute__((aligned(64)));
int main(int argc,char**argv){
  if(argc<2){fprintf(stderr,"usage: %s DENSITY [nm]\n",argv[0]);return 2;}
  double dens=atof(argv[1]); int nm=argc>2;
  make_weights(W, dens, nm);
  make_input(x);
  pack_dense(W, WT);
  // CSR, rows padded to multiple of 16 (gather) / 4 (scalar)
  float *v16=aligned_alloc(64,4*400000); int32_t *c16=aligned_alloc(64,4*400000); int p16[R+1]; p16[0]=0;
  float *v4=aligned_alloc(64,4*400000); int32_t *c4=aligned_alloc(64,4*400000); int p4[R+1]; p4[0]=0;
  int n16=0,n4=0;
  for(int r=0;r<R;r++){ for(int c=0;c<C;c++) if(W[r*C+c]!=0){v16[n16]=W[r*C+c];c16[n16++]=c;v4[n4]=W[r*C+c];c4[n4++]=c;}
    while(n16%16){v16[n16]=0;c16[n16++]=0;} while(n4%4){v4[n4]=0;c4[n4++]=0;} p16[r+1]=n16; p4[r+1]=n4; }
  // sliced ELL gather: slices of 16 rows, slot k = k-th nnz of each row
  int S=(R+15)/16; float *ve=aligned_alloc(64,64*40000); int32_t *ce=aligned_alloc(64,64*40000); int sp[S+1]; sp[0]=0; int ne=0;
  for(int s=0;s<S;s++){ int cnt[16]={0}; int mx=0; static int idx[16][C];
    for(int l=0;l<16;l++){int r=s*16+l; if(r>=R)continue; for(int c=0;c<C;c++) if(W[r*C+c]!=0) idx[l][cnt[l]++]=c; if(cnt[l]>mx)mx=cnt[l];}
    while(mx%2)mx++;
    for(int k=0;k<mx;k++){ for(int l=0;l<16;l++){int r=s*16+l; int has=r<R&&k<cnt[l]; ve[ne*16+l]=has?W[r*C+idx[l][k]]:0; ce[ne*16+l]=has?idx[l][k]:0;} ne++; }
    sp[s+1]=ne; }
  printf("nnz-padded: csr16 %d csr4 %d sell %d\n", n16, n4, ne*16);
  int N=20000; double b[5]={1e9,1e9,1e9,1e9,1e9};
  for(int rep=0;rep<5;rep++){
    double t0=now();
    for(int it=0;it<N;it++){
      dense_matvec(WT, x, y);
      __asm__ volatile(""::"r"(y):"memory");
    }
    double t1=now();
    for(int it=0;it<N;it++){
      for(int r=0;r<R;r++){ float a0=0,a1=0,a2=0,a3=0; for(int p=p4[r];p<p4[r+1];p+=4){ a0+=v4[p]*x[c4[p]]; a1+=v4[p+1]*x[c4[p+1]]; a2+=v4[p+2]*x[c4[p+2]]; a3+=v4[p+3]*x[c4[p+3]]; } y2[r]=(a0+a1)+(a2+a3); }
      __asm__ volatile(""::"r"(y2):"memory");
    }
    double t2=now();
    for(int it=0;it<N;it++){
      for(int r=0;r<R;r++){ __m512 a=_mm512_setzero_ps(); for(int p=p16[r];p<p16[r+1];p+=16){ __m512i ix=_mm512_load_si512(&c16[p]); a=_mm512_fmadd_ps(_mm512_load_ps(&v16[p]), _mm512_i32gather_ps(ix,x,4), a);} y3[r]=_mm512_reduce_add_ps(a); }
      __asm__ volatile(""::"r"(y3):"memory");
    }
    double t3=now();
    for(int it=0;it<N;it++){
      for(int s=0;s<S;s++){ __m512 a0=_mm512_setzero_ps(),a1=a0; for(int k=sp[s];k<sp[s+1];k+=2){
          a0=_mm512_fmadd_ps(_mm512_load_ps(&ve[k*16]), _mm512_i32gather_ps(_mm512_load_si512(&ce[k*16]),x,4), a0);
          a1=_mm512_fmadd_ps(_mm512_load_ps(&ve[k*16+16]), _mm512_i32gather_ps(_mm512_load_si512(&ce[k*16+16]),x,4), a1);}
        _mm512_storeu_ps(&y4[s*16],_mm512_add_ps(a0,a1)); }
      __asm__ volatile(""::"r"(y4):"memory");
    }
    double t4=now();
    for(int it=0;it<N;it++){
      for(int r=0;r<R;r++){ __m256 a=_mm256_setzero_ps(); for(int p=p16[r];p<p16[r+1];p+=8){ __m256i ix=_mm256_load_si256((__m256i*)&c16[p]); a=_mm256_fmadd_ps(_mm256_load_ps(&v16[p]), _mm256_i32gather_ps(x,ix,4), a);} __m128 h=_mm_add_ps(_mm256_castps256_ps128(a),_mm256_extractf128_ps(a,1)); h=_mm_hadd_ps(h,h); h=_mm_hadd_ps(h,h); y5[r]=_mm_cvtss_f32(h); }
      __asm__ volatile(""::"r"(y5):"memory");
    }
    double t5=now();
    double ts[5]={t1-t0,t2-t1,t3-t2,t4-t3,t5-t4}; for(int i=0;i<5;i++) if(ts[i]/N<b[i]) b[i]=ts[i]/N;
  }
  double e=0; for(int r=0;r<R;r++){ double d; d=y[r]-y2[r]; if(d<0)d=-d; if(d>e)e=d; d=y[r]-y3[r]; if(d<0)d=-d; if(d>e)e=d; d=y[r]-y4[r]; if(d<0)d=-d; if(d>e)e=d; d=y[r]-y5[r]; if(d<0)d=-d; if(d>e)e=d;}
  printf("dense %.2f us | scalar csr %.2f (%.2fx) | gather16 csr %.2f (%.2fx) | sell gather16 %.2f (%.2fx) | gather8 csr %.2f (%.2fx) | err %g\n", b[0]*1e6, b[1]*1e6, b[0]/b[1], b[2]*1e6, b[0]/b[2], b[3]*1e6, b[0]/b[3], b[4]*1e6, b[0]/b[4], e);
}
