#ifndef FT_PORT_MPS2_H
#define FT_PORT_MPS2_H
void ft_mps2_init(void);
void ft_mps2_putc(char ch);
void ft_mps2_puts(const char *s);
void ft_mps2_semihost_exit(int code);
void ft_mps2_fault(void);
void SysTick_Handler(void);
#endif
