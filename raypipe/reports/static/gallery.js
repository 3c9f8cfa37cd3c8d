function apply(){
  const status=document.getElementById('status').value, truth=document.getElementById('truth').value;
  const min=parseFloat(document.getElementById('minconf').value), text=document.getElementById('text').value;
  const cards=[...document.querySelectorAll('.card')];
  let shown=0;
  for(const c of cards){
    const keep=(status==='all'||c.dataset.status===status)&&(truth==='all'||c.dataset.truth===truth)
      &&(c.dataset.status!=='ok'||!(min>0)||parseFloat(c.dataset.confidence)>=min)
      &&(!text||c.textContent.includes(text));
    c.classList.toggle('hidden',!keep); if(keep) shown++;
  }
  const key=document.getElementById('sort').value, box=document.getElementById('cards');
  cards.sort((a,b)=>key==='source'?a.dataset.source.localeCompare(b.dataset.source):
    (key==='conf-desc'?1:-1)*(parseFloat(b.dataset.confidence)-parseFloat(a.dataset.confidence)));
  for(const c of cards) box.appendChild(c);
  document.getElementById('shown').textContent=shown+' shown';
  document.body.dataset.shown=shown;
}
window.addEventListener('DOMContentLoaded',()=>{
  const q=new URLSearchParams(location.search);
  for(const k of ['status','truth','sort','minconf','text']) if(q.has(k)) document.getElementById(k).value=q.get(k);
  for(const k of ['status','truth','sort','minconf','text']) document.getElementById(k).addEventListener('input',apply);
  apply();
});
