(function(){
  var table=document.getElementById('gallery'); if(!table) return;
  var tbody=table.tBodies[0];
  function val(tr,key,type){var v=tr.getAttribute('data-'+key);
    if(type==='num'){return v===''||v===null?null:parseFloat(v);} return v||'';}
  table.querySelectorAll('th.sortable').forEach(function(th){
    th.addEventListener('click',function(){
      var key=th.dataset.key,type=th.dataset.type;
      var dir=th.classList.contains('sorted-'+th.dataset.first)?
        (th.dataset.first==='asc'?'desc':'asc'):th.dataset.first;
      table.querySelectorAll('th.sortable').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add('sorted-'+dir);
      var rows=Array.prototype.slice.call(tbody.rows),s=dir==='asc'?1:-1;
      rows.sort(function(a,b){var x=val(a,key,type),y=val(b,key,type);
        if(x===null&&y===null) return 0; if(x===null) return 1; if(y===null) return -1;
        if(type==='num') return s*(x-y)||(+a.dataset.index-b.dataset.index);
        return s*x.localeCompare(y);});
      rows.forEach(function(r){tbody.appendChild(r);});
    });
  });
  var box=document.getElementById('lightbox'),cur=null;
  function links(){return Array.prototype.slice.call(tbody.querySelectorAll('a.full'));}
  function show(a){cur=a;var img=box.querySelector('img');
    if(!img){img=document.createElement('img');img.alt='full-size panel';box.insertBefore(img,box.firstChild);}
    img.src=a.getAttribute('href');box.querySelector('.cap').textContent=a.dataset.id;box.classList.add('open');}
  tbody.addEventListener('click',function(e){var a=e.target.closest('a.full');
    if(a){e.preventDefault();show(a);}});
  box.addEventListener('click',function(){box.classList.remove('open');});
  document.addEventListener('keydown',function(e){if(!box.classList.contains('open')) return;
    if(e.key==='Escape'){box.classList.remove('open');return;}
    var l=links(),i=l.indexOf(cur);
    if(e.key==='ArrowRight'&&i<l.length-1) show(l[i+1]);
    if(e.key==='ArrowLeft'&&i>0) show(l[i-1]);});
})();
